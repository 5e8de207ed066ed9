pub mod pl011;
