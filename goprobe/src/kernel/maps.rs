//! The catalogue of the kernel programs' maps that a run sizes: each mode creates the maps it
//! does not use with one entry (or the smallest ring buffer), so it pays nothing for them.
use aya::EbpfLoader;

/// Which stack maps a run uses; the others are created with one entry, so a run pays nothing for
/// what it does not use.
#[derive(Debug, Clone, Copy, Default)]
pub struct MapUse {
    /// Entry/return pairing (`funclatency`, the agent): the goroutine and open-call maps.
    pub pairing: bool,
    pub stacks: bool,
    pub stack_counts: bool,
    pub profile: bool,
}

pub fn size_unused_maps(loader: &mut EbpfLoader<'_>, used: MapUse) {
    if !used.pairing {
        // Not preallocated, but their hash tables are (16 bytes a bucket).
        for map in ["GOROUTINES", "NESTED", "PROCESSES", "MISSED"] {
            loader.map_max_entries(map, 1);
        }
    }
    if !used.stacks {
        loader.map_max_entries("STACKS", 1);
    }
    if !used.stack_counts {
        loader.map_max_entries("STACK_COUNTS", 1);
    }
    if !used.profile {
        // A ring buffer's size is a power-of-two number of pages.
        loader.map_max_entries("SAMPLES", 4096);
        loader.map_max_entries("PROFILE_TGIDS", 1);
        loader.map_max_entries("KSTACKS", 1);
    }
}
