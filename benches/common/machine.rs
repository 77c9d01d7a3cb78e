//! What a benchmark ran on, printed with every table: timings here are compared as ratios
//! within one invocation, and those ratios depend on the CPU's vector ISA and thread count.
#![allow(dead_code)] // each bench uses part of it

/// CPU model, the vector and matrix extensions that change kernel choice, and threads.
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let present: Vec<&str> = flags.split_whitespace().collect();
    let wanted = [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
    ];
    let shown: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|f| present.contains(f))
        .collect();
    format!(
        "machine: {model}; {} logical CPUs; flags: {}; saerun threads (rayon): {}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if shown.is_empty() {
            "none of avx2/avx512/amx".to_string()
        } else {
            shown.join(" ")
        },
        rayon::current_num_threads(),
        std::env::var("RAYON_NUM_THREADS")
            .map(|v| format!(" (RAYON_NUM_THREADS={v})"))
            .unwrap_or_default()
    )
}

/// The widest f32 FMA the CPU runs, for the peak probe.
pub fn widest_fma() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Some("avx512f");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some("avx2+fma");
        }
    }
    None
}
