mod helpers;
mod mem_protect;
mod model_ownership;
mod model_pgtable;
mod one_page;
mod pgtable;
