//! Wall-clock time whose throughput criterion prints in a named unit rather than its generic
//! "elem/s": GFLOP/s for kernels (`Throughput::Elements` counts floating-point operations),
//! images/s for whole training steps (it counts images).

use std::time::{Duration, Instant};

use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};

/// Wall-clock time, like criterion's `WallTime`, with throughput in a fixed unit.
pub struct WallClock {
    formatter: UnitFormatter,
}

impl WallClock {
    /// Throughput in GFLOP/s.
    pub fn flops() -> Self {
        Self {
            formatter: UnitFormatter {
                unit: "GFLOP/s",
                per_nanosecond: 1.0,
            },
        }
    }

    /// Throughput in images/s.
    pub fn images() -> Self {
        Self {
            formatter: UnitFormatter {
                unit: "images/s",
                per_nanosecond: 1e9,
            },
        }
    }
}

impl Measurement for WallClock {
    type Intermediate = Instant;
    type Value = Duration;

    fn start(&self) -> Instant {
        Instant::now()
    }
    fn end(&self, started: Instant) -> Duration {
        started.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &self.formatter
    }
}

struct UnitFormatter {
    unit: &'static str,
    /// Units per second for one counted element per nanosecond.
    per_nanosecond: f64,
}

impl ValueFormatter for UnitFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            t if t < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                n as f64
            }
            Throughput::ElementsAndBytes { elements, .. } => elements as f64,
            Throughput::Bits(n) => n as f64,
        };
        // values are nanoseconds per iteration.
        values
            .iter_mut()
            .for_each(|ns| *ns = per_iteration / *ns * self.per_nanosecond);
        self.unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
