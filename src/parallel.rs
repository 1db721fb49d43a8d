//! Data parallel over MPI: one process (rank) per device, launched by `mpirun -np N` or Slurm's
//! `srun`. Each optimizer step's micro-batches are dealt to the ranks, every rank runs its share
//! on its own copy of the weights, the gradients and losses are summed across ranks with
//! MPI_Allreduce, and every rank then takes the same AdamW step, so the copies stay identical.
//! Rank 0 alone writes files.
//!
//! Without the `mpi` feature, or outside an MPI launcher, the world is one rank and every
//! collective is the identity: the trainer has one code path.

use std::sync::OnceLock;

use anyhow::Result;

/// Gradients cross between ranks in buckets of this many f32 (16 MiB): the host holds one
/// bucket's send and receive buffers at a time, not a second copy of the model's gradients.
pub const BUCKET_FLOATS: usize = 4 << 20;

/// This process's place among the ranks of the job.
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank among those on this machine: which GPU `gpu` and `auto` take.
    pub local_rank: usize,
    #[cfg(feature = "mpi")]
    comm: Option<Communicator>,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// The job's ranks: one, unless `init` found an MPI launcher.
pub fn world() -> &'static World {
    WORLD.get_or_init(World::single)
}

/// Keeps MPI initialised while it lives (dropping it calls MPI_Finalize).
pub struct MpiSession {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// Joins the MPI job when the process was started by an MPI launcher (Open MPI's `mpirun`,
/// MPICH's `mpiexec`, Slurm's `srun`); otherwise, or without the `mpi` feature, the world is this
/// process alone. Called once, first thing in `main`.
pub fn init() -> MpiSession {
    #[cfg(feature = "mpi")]
    if launched_by_mpi() {
        use mpi::traits::Communicator as _;
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .expect("MPI is initialised once, here");
        let comm = universe.world();
        let local = comm.split_shared(comm.rank());
        let world = World {
            rank: comm.rank() as usize,
            size: comm.size() as usize,
            local_rank: local.rank() as usize,
            comm: Some(Communicator(comm)),
        };
        if WORLD.set(world).is_err() {
            panic!("parallel::init runs before anything asks for the world");
        }
        return MpiSession {
            _universe: Some(universe),
        };
    }
    if launched_by_mpi() && !cfg!(feature = "mpi") {
        eprintln!(
            "warning: started by an MPI launcher, but this rrhf was built without `--features \
             mpi`: every process trains alone"
        );
    }
    MpiSession {
        #[cfg(feature = "mpi")]
        _universe: None,
    }
}

/// The environment each launcher gives its processes.
fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

impl World {
    fn single() -> Self {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            #[cfg(feature = "mpi")]
            comm: None,
        }
    }

    /// Rank 0: the one that writes metrics, checkpoints, plots and manifests.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The items of `items` this rank takes: every `size`-th, from its rank on.
    pub fn share<T>(&self, items: &[T]) -> Vec<usize> {
        (self.rank..items.len()).step_by(self.size).collect()
    }

    /// Sums `values` across the ranks, in place, in buckets of `BUCKET_FLOATS`.
    pub fn sum_f32(&self, values: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            comm.sum(values);
        }
        let _ = values;
    }

    /// Sums `values` across the ranks, in place (the step's loss sums and token counts).
    pub fn sum_f64(&self, values: &mut [f64]) {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            comm.sum(values);
        }
        let _ = values;
    }

    /// The largest of each of `values` across the ranks, in place.
    fn max_f64(&self, values: &mut [f64]) {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            comm.max(values);
        }
        let _ = values;
    }

    /// Every rank's `mine`, in rank order, on every rank.
    pub fn all_gather(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            return comm.all_gather(&mine);
        }
        vec![mine]
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            use mpi::traits::CommunicatorCollectives as _;
            comm.0.barrier();
        }
    }

    /// With more than one rank, ends the whole job (every rank) after `error` is printed, so
    /// that no rank waits forever in a collective for one that failed.
    pub fn abort_job_on(&self, error: &anyhow::Error) {
        if self.size <= 1 {
            return;
        }
        eprintln!("error: rank {} of {}: {error:#}", self.rank, self.size);
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            use mpi::traits::Communicator as _;
            comm.0.abort(1);
        }
    }

    /// For messages: `" (rank r of n)"`, or nothing in a world of one.
    pub fn tag(&self) -> String {
        match self.size {
            1 => String::new(),
            n => format!(" (rank {} of {n})", self.rank),
        }
    }
}

/// Runs `f` `repeats` times between barriers and returns the fastest of its times, each the
/// time of the slowest rank (a collective ends when its last rank does).
pub fn time_slowest_rank(repeats: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let world = world();
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        world.barrier();
        let started = std::time::Instant::now();
        f()?;
        let mut seconds = [started.elapsed().as_secs_f64()];
        world.max_f64(&mut seconds);
        best = best.min(seconds[0]);
    }
    Ok(best)
}

/// MPI_COMM_WORLD. Only the main thread calls MPI (MPI_THREAD_FUNNELED); the world lives in a
/// static so that the trainer need not carry it, which needs Send and Sync.
#[cfg(feature = "mpi")]
struct Communicator(mpi::topology::SimpleCommunicator);

// SAFETY: MPI is initialised with MPI_THREAD_FUNNELED, and every call is made from the main
// thread (the trainer's loop); the handle itself is a plain MPI_Comm.
#[cfg(feature = "mpi")]
unsafe impl Send for Communicator {}
#[cfg(feature = "mpi")]
unsafe impl Sync for Communicator {}

#[cfg(feature = "mpi")]
impl Communicator {
    fn sum<T: mpi::traits::Equivalence + Copy + Default>(&self, values: &mut [T]) {
        self.reduce(values, mpi::collective::SystemOperation::sum());
    }

    fn max<T: mpi::traits::Equivalence + Copy + Default>(&self, values: &mut [T]) {
        self.reduce(values, mpi::collective::SystemOperation::max());
    }

    fn reduce<T: mpi::traits::Equivalence + Copy + Default>(
        &self,
        values: &mut [T],
        op: mpi::collective::SystemOperation,
    ) {
        use mpi::traits::CommunicatorCollectives as _;
        let mut received = vec![T::default(); values.len().min(BUCKET_FLOATS)];
        for chunk in values.chunks_mut(BUCKET_FLOATS) {
            let received = &mut received[..chunk.len()];
            self.0.all_reduce_into(&*chunk, received, op);
            chunk.copy_from_slice(received);
        }
    }

    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        use mpi::datatype::PartitionMut;
        use mpi::traits::{Communicator as _, CommunicatorCollectives as _};
        let size = self.0.size() as usize;
        let mut counts = vec![0i32; size];
        self.0
            .all_gather_into(&(mine.len() as i32), &mut counts[..]);
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |at, &n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        let mut all = vec![0u8; counts.iter().map(|&n| n as usize).sum()];
        let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
        self.0.all_gather_varcount_into(mine, &mut partition);
        counts
            .iter()
            .zip(&displs)
            .map(|(&n, &at)| all[at as usize..(at + n) as usize].to_vec())
            .collect()
    }
}
