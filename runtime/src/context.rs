//! Where and how a network's passes run, as a value: a [`Context`] is a thread pool together
//! with the [`Settings`] its passes run with (the kernels' instruction set, the convolution
//! algorithm policy and the thresholds at which work splits between threads).
//!
//! `infer`, `fit` and every other pass run with the default context unless given another:
//! rayon's global pool (or the pool the caller already runs in) and the default settings, which
//! `CONSTNET_ISA` and `CONSTNET_CONV` may change for the whole process. A built context owns its
//! pool; [`Context::install`] runs code on it, and every pass that code starts (and each part a
//! pass hands to another thread of that pool) runs with the context's settings.
//!
//! Settings reach the kernels through the pool's threads, not through a global: each thread of
//! a context's pool is given the context's settings when it starts ([`Settings::current`] reads
//! them), and a thread outside every context's pool reads the default. This module sits below
//! everything else in the crate: it imports nothing of it.

use std::cell::OnceCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// An instruction-set path of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// 512-bit vectors (AVX-512F): 16 lanes, 32 registers.
    Avx512,
    /// 256-bit vectors with fused multiply-add (AVX2 + FMA): 8 lanes, 16 registers.
    Avx2,
    /// Plain Rust that the compiler vectorises for the baseline target.
    Portable,
}

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `CONSTNET_ISA` accepts for this path.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The path called `name` (`avx512`, `avx2` or `portable`).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this CPU can run, fastest first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The fastest path this CPU can run.
    pub fn fastest() -> Isa {
        let supported = Isa::ALL.into_iter().find(|isa| isa.is_supported());
        supported.unwrap_or(Isa::Portable)
    }

    /// The path the kernels use on this thread: its context's ([`Settings::current`]).
    pub fn active() -> Isa {
        with_current(|settings| settings.isa)
    }
}

/// Which algorithm convolutions run where Winograd's applies (3x3, stride 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvPolicy {
    /// `auto`: each convolution's own rule (Winograd where it pays, with the tile that makes the
    /// fewest products; the GEMM elsewhere).
    #[default]
    Auto,
    /// `gemm`: the GEMM everywhere.
    Gemm,
    /// `winograd`: Winograd wherever it applies, with the tile the layer's rule picks.
    Winograd,
    /// `winograd2x2`: Winograd F(2x2, 3x3) wherever it applies.
    Winograd2x2,
    /// `winograd4x4`: Winograd F(4x4, 3x3) wherever it applies.
    Winograd4x4,
}

impl ConvPolicy {
    /// Every policy.
    pub const ALL: [ConvPolicy; 5] = [
        ConvPolicy::Auto,
        ConvPolicy::Gemm,
        ConvPolicy::Winograd,
        ConvPolicy::Winograd2x2,
        ConvPolicy::Winograd4x4,
    ];
    /// The name `CONSTNET_CONV` accepts for this policy.
    pub fn name(self) -> &'static str {
        match self {
            ConvPolicy::Auto => "auto",
            ConvPolicy::Gemm => "gemm",
            ConvPolicy::Winograd => "winograd",
            ConvPolicy::Winograd2x2 => "winograd2x2",
            ConvPolicy::Winograd4x4 => "winograd4x4",
        }
    }

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<ConvPolicy> {
        ConvPolicy::ALL
            .into_iter()
            .find(|policy| policy.name() == name)
    }
}

/// The least work a part of a pass must have to gain from another thread: every threshold at
/// which constnet splits work, in one place. A thread that sleeps takes tens of microseconds to
/// wake; one kept spinning for the pass (see [`crate::plan::on_pool`]) starts within one. Where
/// work splits never changes a result, only its speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Splits {
    /// Fewest values (read and written) a task of a per-sample or element-wise pass is given.
    pub min_task_values: usize,
    /// Fewest values a task of an activation's own pass (not fused into a product) is given.
    pub min_activation_values: usize,
    /// Fewest values a task of an optimiser's update of one tensor is given.
    pub min_update_values: usize,
    /// Fewest multiply-adds a part of a product split by rows must have, and any part handed
    /// to the pool while it is not kept awake for the pass (a sleeping thread's wake-up must
    /// be repaid).
    pub gemm_min_muls_per_part: usize,
    /// The same while the pool's threads are kept awake for the pass.
    pub gemm_min_muls_per_awake_part: usize,
    /// Fewest multiply-adds a part of a single-row product split by column panels must have.
    pub gemm_min_muls_per_column_part: usize,
    /// Fewest multiply-adds a part of one sample's output rows must have when a convolution
    /// splits a sample's rows between threads (batches smaller than the pool).
    pub row_split_min_muls_per_part: usize,
    /// Multiply-adds a pass over fewer samples than the pool has threads must have for the
    /// pool's other threads to be kept awake for it.
    pub keep_awake_muls: usize,
    /// The same for a pass over at least one sample per thread. Products split from
    /// `gemm_min_muls_per_part` multiply-adds per part, so a smaller pass runs mostly on one
    /// thread, which a spinning neighbour would only slow down.
    pub keep_awake_batch_muls: usize,
}

impl Default for Splits {
    fn default() -> Self {
        Splits {
            min_task_values: 1 << 15,
            min_activation_values: 1 << 16,
            min_update_values: 1 << 17,
            gemm_min_muls_per_part: 1 << 22,
            gemm_min_muls_per_awake_part: 1 << 16,
            gemm_min_muls_per_column_part: 1 << 18,
            row_split_min_muls_per_part: 1 << 16,
            keep_awake_muls: 1 << 20,
            keep_awake_batch_muls: 1 << 23,
        }
    }
}

/// How a context's passes run: the kernels' instruction set, the convolution policy and the
/// split thresholds. Results depend on the instruction set (its order of sums) and the
/// convolution algorithm, never on the splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Settings {
    /// The kernels' instruction-set path.
    pub isa: Isa,
    /// Which algorithm convolutions run.
    pub conv: ConvPolicy,
    /// Where work splits between threads.
    pub splits: Splits,
}

impl Default for Settings {
    /// The fastest path this CPU has, each convolution's own rule, the default splits.
    fn default() -> Self {
        Settings {
            isa: Isa::fastest(),
            conv: ConvPolicy::Auto,
            splits: Splits::default(),
        }
    }
}

impl Settings {
    /// The default settings with what `CONSTNET_ISA` (a path's name) and `CONSTNET_CONV` (a
    /// policy's name) set, where set.
    ///
    /// # Errors
    /// A variable whose value names no path or policy, or a path this CPU lacks.
    pub fn from_env() -> Result<Settings, ContextError> {
        let default = Settings::default();
        Ok(Settings {
            isa: isa_from_env()?.unwrap_or(default.isa),
            conv: conv_from_env()?.unwrap_or(default.conv),
            ..default
        })
    }

    /// The settings a pass started on this thread runs with: those of the context whose pool
    /// the thread belongs to, or the default context's.
    pub fn current() -> Settings {
        with_current(|settings| *settings)
    }
}

/// The value of the environment variable `name`, if it is set.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The path `CONSTNET_ISA` names, if it is set.
fn isa_from_env() -> Result<Option<Isa>, ContextError> {
    let Some(value) = env_value("CONSTNET_ISA") else {
        return Ok(None);
    };
    let names = Isa::ALL.map(Isa::name);
    let isa = Isa::from_name(&value).ok_or_else(|| unknown("CONSTNET_ISA", value, &names))?;
    check_supported(isa).map(|()| Some(isa))
}

/// The policy `CONSTNET_CONV` names, if it is set.
fn conv_from_env() -> Result<Option<ConvPolicy>, ContextError> {
    let Some(value) = env_value("CONSTNET_CONV") else {
        return Ok(None);
    };
    let policy = ConvPolicy::from_name(&value);
    policy.map(Some).ok_or_else(|| {
        unknown(
            "CONSTNET_CONV",
            value,
            &ConvPolicy::ALL.map(ConvPolicy::name),
        )
    })
}

/// The default context's settings: [`Settings::from_env`], read once per process. A variable
/// it cannot use is reported on standard error and left out.
fn default_settings() -> &'static Settings {
    /// `read`'s value, or `None` after reporting its error.
    fn reported<T>(read: Result<Option<T>, ContextError>) -> Option<T> {
        read.unwrap_or_else(|error| {
            eprintln!("constnet: {error}; using the default");
            None
        })
    }
    static DEFAULT: OnceLock<Settings> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let default = Settings::default();
        Settings {
            isa: reported(isa_from_env()).unwrap_or(default.isa),
            conv: reported(conv_from_env()).unwrap_or(default.conv),
            ..default
        }
    })
}

thread_local! {
    /// The settings of the context whose pool this thread belongs to; set once, when the
    /// thread starts (or joins the pool, [`ContextBuilder::with_this_thread`]), and never
    /// changed. Unset on every other thread.
    static POOL_SETTINGS: OnceCell<Settings> = const { OnceCell::new() };
}

/// `read` of the settings passes started on this thread run with.
pub(crate) fn with_current<R>(read: impl FnOnce(&Settings) -> R) -> R {
    POOL_SETTINGS.with(|own| read(own.get().unwrap_or_else(|| default_settings())))
}

/// Where and how passes run: a thread pool and the [`Settings`] of every pass on it.
///
/// ```
/// use constnet_runtime::context::{Context, ConvPolicy, Isa};
///
/// let portable = Context::builder()
///     .threads(2)
///     .isa(Isa::Portable)
///     .conv(ConvPolicy::Gemm)
///     .build()?;
/// assert_eq!(portable.install(Isa::active), Isa::Portable);
/// assert_eq!(portable.threads(), 2);
/// # Ok::<(), constnet_runtime::context::ContextError>(())
/// ```
#[derive(Clone)]
pub struct Context {
    /// The context's own pool; `None` for the default context, which runs on rayon's global
    /// pool (or the pool its caller runs in).
    pool: Option<Arc<rayon::ThreadPool>>,
    settings: Settings,
}

impl Default for Context {
    /// The default context: rayon's global pool (or the pool the caller already runs in) and
    /// the default settings, as `CONSTNET_ISA` and `CONSTNET_CONV` set them.
    fn default() -> Self {
        Context {
            pool: None,
            settings: *default_settings(),
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("threads", &self.threads())
            .field("own_pool", &self.pool.is_some())
            .field("settings", &self.settings)
            .finish()
    }
}

impl Context {
    /// A builder of a context with a pool of its own, starting from the default settings.
    pub fn builder() -> ContextBuilder {
        ContextBuilder {
            threads: None,
            with_this_thread: false,
            settings: *default_settings(),
        }
    }

    /// The settings of this context's passes.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Threads of this context's pool (for the default context, of the pool the caller runs
    /// in, rayon's global pool when it runs in none).
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `f` on this context's pool: every pass `f` starts (an `infer`, a `fit`, an
    /// `evaluate`) runs on the pool's threads with the context's settings. The default context
    /// runs `f` where it is called: called from a thread of another context's pool, `f`'s
    /// passes run there, with that pool's settings.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}

/// Builds a [`Context`] with a pool of its own ([`Context::builder`]).
#[derive(Clone, Debug)]
pub struct ContextBuilder {
    threads: Option<usize>,
    with_this_thread: bool,
    settings: Settings,
}

impl ContextBuilder {
    /// Threads of the pool (rayon's default, one per core, when not set).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Makes the thread that builds the context the first of its pool's threads (counted in
    /// [`ContextBuilder::threads`]), as ONNX Runtime's intra-op pool counts its caller.
    ///
    /// A pass this thread starts then runs on it directly, the pool's other threads taking
    /// their parts: no hand-off to a pool thread, and no wait for one to wake the caller again
    /// at the end, so a call from this thread is as fast as one from inside the pool. Passes
    /// it starts run with the context's settings whether or not they go through
    /// [`Context::install`]. Passes started on other threads run on the pool's other threads.
    ///
    /// The thread stays in the pool for as long as it lives (rayon's `use_current_thread`): a
    /// thread can be made part of one context only, so build such a context once, on the thread
    /// that calls the network (a program's main thread, a request handler's own thread). Once
    /// the context is dropped, this thread runs its passes alone, with the context's settings.
    ///
    /// ```
    /// use constnet_runtime::context::{Context, Settings};
    ///
    /// let caller = std::thread::spawn(|| {
    ///     let context = Context::builder().threads(2).with_this_thread().build()?;
    ///     assert_eq!(rayon::current_thread_index(), Some(0));
    ///     assert_eq!(Settings::current(), context.settings());
    ///     // A second context cannot take this thread.
    ///     assert!(Context::builder().with_this_thread().build().is_err());
    ///     Ok::<(), constnet_runtime::context::ContextError>(())
    /// });
    /// caller.join().unwrap()?;
    /// # Ok::<(), constnet_runtime::context::ContextError>(())
    /// ```
    pub fn with_this_thread(mut self) -> Self {
        self.with_this_thread = true;
        self
    }

    /// The kernels' instruction-set path.
    pub fn isa(mut self, isa: Isa) -> Self {
        self.settings.isa = isa;
        self
    }

    /// Which algorithm convolutions run.
    pub fn conv(mut self, conv: ConvPolicy) -> Self {
        self.settings.conv = conv;
        self
    }

    /// Where work splits between threads.
    pub fn splits(mut self, splits: Splits) -> Self {
        self.settings.splits = splits;
        self
    }

    /// Every setting at once.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The context, its pool started.
    ///
    /// # Errors
    /// [`ContextError::UnsupportedIsa`] for a path this CPU lacks, [`ContextError::NoThreads`]
    /// for a pool of 0 threads, [`ContextError::ThreadInPool`] when this thread is to join the
    /// pool ([`ContextBuilder::with_this_thread`]) but belongs to one already,
    /// [`ContextError::Pool`] when the threads cannot be started.
    pub fn build(self) -> Result<Context, ContextError> {
        check_supported(self.settings.isa)?;
        if self.threads == Some(0) {
            return Err(ContextError::NoThreads);
        }
        if self.with_this_thread && rayon::current_thread_index().is_some() {
            return Err(ContextError::ThreadInPool);
        }
        let settings = self.settings;
        let give_settings = move || {
            POOL_SETTINGS.with(|own| {
                let _ = own.set(settings);
            })
        };
        let mut pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads.unwrap_or(0))
            .thread_name(|index| format!("constnet-{index}"))
            .start_handler(move |_| give_settings());
        if self.with_this_thread {
            pool = pool.use_current_thread();
        }
        let pool = pool
            .build()
            .map_err(|error| ContextError::Pool(error.to_string()))?;
        if self.with_this_thread {
            give_settings();
        }
        Ok(Context {
            pool: Some(Arc::new(pool)),
            settings,
        })
    }
}

/// `isa`, or the error of a path this CPU cannot run.
fn check_supported(isa: Isa) -> Result<(), ContextError> {
    if isa.is_supported() {
        Ok(())
    } else {
        Err(ContextError::UnsupportedIsa {
            isa,
            supported: Isa::supported(),
        })
    }
}

/// Why a [`Context`] or [`Settings`] could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// An instruction set this CPU lacks.
    #[error("this CPU cannot run the {} path (it can run: {})", isa.name(), names(supported))]
    UnsupportedIsa {
        /// The path asked for.
        isa: Isa,
        /// The paths this CPU can run.
        supported: Vec<Isa>,
    },
    /// An environment variable whose value names nothing it accepts.
    #[error("{variable}={value} is not one of {expected}")]
    UnknownValue {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The values it accepts.
        expected: String,
    },
    /// A pool of 0 threads.
    #[error("a context's pool needs at least one thread")]
    NoThreads,
    /// A context to be joined by the thread that builds it, built on a thread of a pool.
    #[error("this thread belongs to a thread pool already, so it cannot join a new context's pool")]
    ThreadInPool,
    /// The pool's threads could not be started.
    #[error("the context's thread pool could not be started: {0}")]
    Pool(String),
}

/// The error of `variable`'s `value`, which is none of `expected`.
fn unknown(variable: &'static str, value: String, expected: &[&str]) -> ContextError {
    ContextError::UnknownValue {
        variable,
        value,
        expected: expected.join(", "),
    }
}

/// `isas` by name, comma-separated.
fn names(isas: &[Isa]) -> String {
    isas.iter()
        .map(|isa| isa.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        for policy in ConvPolicy::ALL {
            assert_eq!(ConvPolicy::from_name(policy.name()), Some(policy));
        }
        assert_eq!(Isa::from_name("sse9"), None);
        assert_eq!(ConvPolicy::from_name("fft"), None);
        assert!(Isa::Portable.is_supported() && Isa::active().is_supported());
    }

    /// A context's settings reach every thread of its pool, and only them.
    #[test]
    fn settings_reach_every_thread_of_the_pool() {
        let splits = Splits {
            min_task_values: 7,
            ..Splits::default()
        };
        let context = Context::builder()
            .threads(2)
            .isa(Isa::Portable)
            .conv(ConvPolicy::Winograd2x2)
            .splits(splits)
            .build()
            .expect("a portable pool builds");
        let (here, there) = context.install(|| rayon::join(Settings::current, Settings::current));
        assert_eq!(here, context.settings());
        assert_eq!(there, context.settings());
        assert_eq!(here.splits.min_task_values, 7);
        assert_eq!(Settings::current(), Context::default().settings());
        assert_eq!(
            Context::default().install(Settings::current),
            Settings::current()
        );
    }

    #[test]
    fn bad_contexts_are_errors() {
        let zero = Context::builder().threads(0).build();
        assert_eq!(zero.unwrap_err(), ContextError::NoThreads);
        for isa in Isa::ALL.into_iter().filter(|isa| !isa.is_supported()) {
            let error = Context::builder().isa(isa).build().unwrap_err();
            assert!(error.to_string().contains(isa.name()), "{error}");
        }
    }

    /// CI runs the kernel tests once per path through `CONSTNET_ISA`: prove the path switched.
    #[test]
    fn constnet_isa_selects_the_default_path() {
        match env_value("CONSTNET_ISA").and_then(|name| Isa::from_name(&name)) {
            Some(isa) if isa.is_supported() => assert_eq!(Isa::active(), isa),
            _ => assert_eq!(Isa::active(), Isa::fastest()),
        }
    }
}
