// Emits pyo3's `Py_3_x` cfgs so version-specific capture code is chosen at
// compile time for the interpreter maturin builds against.
fn main() {
    #[cfg(feature = "python")]
    {
        pyo3_build_config::use_pyo3_cfgs();
    }
    println!("cargo::rustc-check-cfg=cfg(Py_3_9, Py_3_10, Py_3_11, Py_3_12, Py_3_13, Py_3_14, Py_3_15, Py_GIL_DISABLED, Py_LIMITED_API, PyPy, GraalPy)");
}
