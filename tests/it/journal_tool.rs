//! `inventoryctl journal` on known journals.
