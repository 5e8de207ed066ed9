pub mod gicv3;
pub mod pl011;
