//! `uniffi-bindgen`, pinned to the workspace's uniffi version so that generated bindings always
//! match the scaffolding compiled into `souk-mobile-core`.
//!
//! ```text
//! cargo run -p uniffi-bindgen -- generate --library target/release/libsouk_mobile_core.so \
//!     --language kotlin --out-dir bindings/kotlin
//! ```
//! `scripts/bindings` runs it for Kotlin, Swift and Python.

fn main() {
    uniffi::uniffi_bindgen_main();
}
