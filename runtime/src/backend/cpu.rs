//! Process-wide kernel choice for tract, made once at start for the CPU the node runs on.
//!
//! tract picks its matrix-multiply kernels from knobs it reads from the environment the first
//! time it plans a model, and its default cost model is not the best on every CPU. A node
//! sets those knobs itself from the table below rather than asking its operator to export
//! variables. Variables the operator did export win.
//!
//! | CPU (detected)                              | knob set                      | why |
//! |---------------------------------------------|-------------------------------|-----|
//! | x86_64, AMD, AVX-512 with VNNI              | `TRACT_AVX512_FMA_UNITS=2`    | int8: the 16x16 VNNI kernel instead of 8x8 |
//! | anything else                               | none                          | tract's own probing is right or unmeasured |
//!
//! Knobs tried and left out (`TRACT_CPU_ISA=-avx512f`), and why the allocator is left alone,
//! are in `docs/performance.md`, "Kernel knobs", with the measurements behind each choice.

/// One environment knob set (or left alone) by [`configure_cpu_kernels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelKnob {
    /// Variable name, e.g. `TRACT_AVX512_FMA_UNITS`.
    pub name: &'static str,
    /// Value chosen by the table.
    pub value: &'static str,
    /// False when the operator had already set the variable, which is then left as it was.
    pub applied: bool,
}

/// What [`configure_cpu_kernels`] detected and chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTuning {
    /// Row of the table that matched, in words.
    pub cpu: &'static str,
    /// Knobs of that row.
    pub knobs: Vec<KernelKnob>,
}

/// The table row for this CPU, without touching the environment.
pub fn cpu_kernel_table() -> (&'static str, Vec<(&'static str, &'static str)>) {
    #[cfg(target_arch = "x86_64")]
    {
        let amd = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| info.contains("AuthenticAMD"));
        if amd
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return ("x86_64 AMD with AVX-512 VNNI", vec![("TRACT_AVX512_FMA_UNITS", "2")]);
        }
    }
    ("no tuning known for this CPU", Vec::new())
}

/// The CPU this process runs on and the instruction-set paths taken on it, in one line:
/// its model name, the vector extensions that matter to the kernels (present or not), the
/// path each of the node's own tract kernels takes, and tract's knob row. Every benchmark
/// prints it, so that figures from different machines are never compared blind.
pub fn machine_report() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim()))
        .unwrap_or("unknown model");
    let isa: Vec<String> =
        isa_flags().into_iter().map(|(name, has)| format!("{}{name}", if has { "+" } else { "-" })).collect();
    let paths: Vec<String> =
        cascade_kernels::kernel_paths().into_iter().map(|(k, p)| format!("{k}={p}")).collect();
    let (row, _) = cpu_kernel_table();
    format!(
        "cpu: {model} ({}, {} threads); isa {}; kernels {}; tract knobs: {row}",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, usize::from),
        isa.join(" "),
        paths.join(" "),
    )
}

/// The vector extensions the kernels (ours and tract's) choose between, and whether this
/// CPU has each.
fn isa_flags() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        vec![
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx512f", has!("avx512f")),
            ("avx512vnni", has!("avx512vnni")),
            ("avxvnni", has!("avxvnni")),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        vec![("neon", has!("neon")), ("dotprod", has!("dotprod")), ("i8mm", has!("i8mm"))]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

/// Sets tract's kernel knobs for this CPU (see the module table) and returns the choice.
///
/// Call it first thing in `main`, before any thread exists and before any model is loaded:
/// tract reads the knobs once, at first use.
///
/// # Safety
/// It writes process environment variables, which is undefined behaviour if another thread
/// reads or writes the environment at the same time. Call it while the process has one thread.
pub unsafe fn configure_cpu_kernels() -> CpuTuning {
    let (cpu, row) = cpu_kernel_table();
    let knobs = row
        .into_iter()
        .map(|(name, value)| {
            let applied = std::env::var_os(name).is_none();
            if applied {
                // SAFETY: the caller guarantees the process is single-threaded here.
                unsafe { std::env::set_var(name, value) };
            }
            KernelKnob { name, value, applied }
        })
        .collect();
    CpuTuning { cpu, knobs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_report_names_the_cpu_the_extensions_and_every_kernel_path() {
        let report = machine_report();
        assert!(report.starts_with("cpu: "), "{report}");
        assert!(report.contains(std::env::consts::ARCH), "{report}");
        for (kernel, path) in cascade_kernels::kernel_paths() {
            assert!(report.contains(&format!("{kernel}={path}")), "{report}");
        }
        for (flag, has) in isa_flags() {
            let mark = if has { '+' } else { '-' };
            assert!(report.contains(&format!("{mark}{flag}")), "{report}");
        }
        assert!(!report.contains('\n'), "one line: {report}");
    }
}
