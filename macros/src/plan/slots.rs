//! Where inference keeps each value of a plan's graph: the network's output, a view of another
//! value, or one of a few reused buffers.

use constnet_catalogue::InferenceSlot;

use super::{Graph, Source, ValueId};

/// The inference storage of every value of a graph.
pub struct Slots {
    /// Each value's slot (`None` for the caller's input).
    pub of: Vec<Option<InferenceSlot>>,
    /// How many buffers the slots use.
    pub buffers: usize,
    /// The buffers to give back after each op: those of the values it was the last to read.
    pub released: Vec<Vec<(usize, ValueId)>>,
}

impl Graph<'_> {
    /// Where inference keeps each value: every op's output takes the lowest buffer free of
    /// values a later op reads (a view shares its value's), the last op's goes to the output.
    pub fn slots(&self) -> Slots {
        let mut last_read = vec![0; self.values.len()];
        for (index, op) in self.ops.iter().enumerate() {
            for input in op.inputs() {
                last_read[self.root(input)] = index;
            }
        }
        let mut of: Vec<Option<InferenceSlot>> = vec![None; self.values.len()];
        let mut busy: Vec<bool> = Vec::new();
        let mut released = Vec::new();
        for (index, op) in self.ops.iter().enumerate() {
            of[op.output] = match self.values[op.output].source {
                Source::View(viewed) => of[viewed],
                _ if op.output == self.result() => Some(InferenceSlot::Output),
                _ => {
                    let free = busy.iter().position(|b| !b).unwrap_or(busy.len());
                    if free == busy.len() {
                        busy.push(false);
                    }
                    busy[free] = true;
                    Some(InferenceSlot::Buffer(free))
                }
            };
            let mut given = Vec::new();
            for input in op.inputs() {
                let root = self.root(input);
                if let (Some(InferenceSlot::Buffer(buffer)), true) =
                    (of[root], last_read[root] == index)
                    && busy[buffer]
                {
                    busy[buffer] = false;
                    given.push((buffer, root));
                }
            }
            released.push(given);
        }
        Slots {
            of,
            buffers: busy.len(),
            released,
        }
    }
}
