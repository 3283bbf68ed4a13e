fn main() -> std::process::ExitCode {
    tune_allocator();
    fix_thread_count();
    curric::cli::main()
}

/// candle asks for its thread count on every matmul, and without `RAYON_NUM_THREADS` that
/// means parsing `/proc/cpuinfo` (85 µs here, plus the kernel's formatting of it): a rollout
/// runs ~1,200 matmuls a step, and the reads were 16 % of its main thread. Setting the
/// variable once to the count candle would have found (physical cores, within the CPUs this
/// process may use) keeps the same parallelism without the reads. A value the user set wins.
fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let allowed = std::thread::available_parallelism().map_or(1, usize::from);
    let n = num_cpus::get_physical().clamp(1, allowed.max(1));
    // Called first thing in main, before any other thread exists to read the environment.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
}

/// glibc serves every allocation above its mmap threshold (128 KiB to start) with fresh pages
/// and unmaps them on free, so each activation and gradient tensor of a training step costs
/// page faults and zeroing: on 2 cores that was a third of a GRPO update (`curric bench`,
/// nano: 935 → 645 ms; micro: 3.3 → 2.1 s). Keeping freed memory in the heap instead reuses
/// it; peak memory is unchanged, since a step frees what the next one allocates.
///
/// The threshold stops at 32 MiB, and the heap's top was trimmed past 1 GiB: at 128 new
/// tokens (benches/trl, 128 × 133 tokens) tensors are larger and a step's heap swings by
/// more, and 55 % of a step's CPU time was the kernel's (6.1 M page faults in two steps).
/// Never mapping and never trimming took that to 1.2 M faults (the first step's) and the
/// update from 15.3 to 10.4 s, with the same peak memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // The largest threshold glibc accepts on 64-bit (4 MiB × sizeof(long)), for where
    // M_MMAP_MAX is not honoured.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists, and a rejected value leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
