//! The CPU sampler's kernel side, loaded and attached: a software cpu-clock perf event on every
//! CPU runs `goprobe_profile` (goprobe-ebpf/src/stacks.rs), which walks the sampled thread's
//! stacks when its process is one of `PROFILE_TGIDS` and sends them through `SAMPLES`.
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};

use super::{KernelError, load_error, loader, maps, preflight};

const PROGRAM: &str = "goprobe_profile";

/// Load the sampler and start it at `frequency` Hz on every CPU (with the kernel stacks of
/// samples taken in the kernel if `kernel_stacks`); its ring buffer of samples.
pub fn load(frequency: u64, kernel_stacks: bool) -> Result<(Ebpf, RingBuf<MapData>), KernelError> {
    preflight()?;
    let mut loader = loader();
    let kernel_flag = u8::from(kernel_stacks);
    loader.override_global("PROFILE_KERNEL_STACKS", &kernel_flag, true);
    maps::size_unused_maps(
        &mut loader,
        maps::MapUse {
            pairing: false,
            stacks: true,
            stack_counts: false,
            profile: true,
            kernel_stacks,
            split: false,
            offcpu: false,
        },
    );
    let mut ebpf = super::load_object(loader)?;
    let program: &mut PerfEvent = ebpf
        .program_mut(PROGRAM)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| unreachable!("the eBPF object defines {PROGRAM}"));
    program.load().map_err(load_error)?;
    let cpus = aya::util::online_cpus().map_err(|(what, e)| KernelError::Failed {
        what: format!("reading {what}"),
        source: Box::new(e),
    })?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(1_000_000_000 / frequency.max(1)),
                false,
            )
            .map_err(|e| KernelError::Attach {
                target: format!("CPU {cpu}"),
                sites: 1,
                hint: "",
                source: Box::new(e),
            })?;
    }
    let samples = ebpf
        .take_map(maps::name::SAMPLES)
        .ok_or_else(|| KernelError::Load("no SAMPLES map".into()))
        .and_then(|m| {
            RingBuf::try_from(m).map_err(|e| KernelError::Failed {
                what: "SAMPLES".into(),
                source: Box::new(e),
            })
        })?;
    Ok((ebpf, samples))
}

/// Stop sampling: unloading the program detaches it from every CPU.
pub fn stop(ebpf: &mut Ebpf) {
    if let Some(program) = ebpf
        .program_mut(PROGRAM)
        .and_then(|p| <&mut PerfEvent>::try_from(p).ok())
    {
        let _ = program.unload();
    }
}
