// Emits pyo3's `Py_3_x` cfgs, and one `tbc_*` alias per family of CPython
// layouts, so that code reading a layout names the family it needs
// (`#[cfg(tbc_iframe)]`) instead of spelling out versions and build flags.
// A new CPython version joins a family here, once its file in
// `src/capture/cpython/` describes it.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(Py_3_9, Py_3_10, Py_3_11, Py_3_12, Py_3_13, Py_3_14, Py_3_15, Py_GIL_DISABLED, Py_LIMITED_API, PyPy, GraalPy)");
    println!(
        "cargo::rustc-check-cfg=cfg(tbc_iframe, tbc_gc_lists, tbc_frame_prefix, tbc_published, tbc_dict_kind)"
    );
    #[cfg(feature = "python")]
    {
        pyo3_build_config::use_pyo3_cfgs();
        let config = pyo3_build_config::get();
        let version = config.version();
        let minor = if version.major == 3 { version.minor } else { 0 };
        let gil = !config.is_free_threaded();
        // Explicit, never by accident: a CPython newer than the last file in
        // `src/capture/cpython/` is built with that file (3.15's), each of
        // its structs is read only past the reader's run-time check (the
        // published offsets, the type's size), and its tasks are refused
        // (`cpython::KNOWN`).
        if version.major == 3 && minor > 15 {
            println!(
                "cargo::warning=CPython 3.{minor} is newer than the layouts tbcollect describes \
                 (src/capture/cpython/v3_9.rs .. v3_15.rs): built with 3.15's; its tasks are \
                 not captured (the snapshot's errors say so) until a v3_{minor}.rs says how \
                 it lays them out"
            );
        }
        for (alias, on) in [
            // `_PyInterpreterFrame`s (and the generators that embed one)
            // read in place: 3.11-3.13 with the GIL.
            ("tbc_iframe", gil && (11..=13).contains(&minor)),
            // The collector's generation lists read in place: 3.9-3.13
            // with the GIL (3.14 has an incremental collector; a
            // free-threaded build has no lists).
            ("tbc_gc_lists", gil && (9..=13).contains(&minor)),
            // The public `PyFrameObject` prefix with `f_valuestack`: 3.9, 3.10.
            ("tbc_frame_prefix", (9..=10).contains(&minor)),
            // Native tasks in the thread states' lists and generator
            // frames, read where `_PyRuntime.debug_offsets` and
            // `.AsyncioDebug` say: 3.14+ with the GIL.
            ("tbc_published", gil && minor >= 14),
            // A dict's keys object says whether all its keys are exact
            // `str`s (`dk_kind`, its fourth field): 3.11+ with the GIL.
            ("tbc_dict_kind", gil && minor >= 11),
        ] {
            if on {
                println!("cargo::rustc-cfg={alias}");
            }
        }
    }
}
