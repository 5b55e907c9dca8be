//! Where inference keeps a value: the vocabulary the macro's planner assigns and the runtime's
//! plan table reads.

/// Where an op's output lives during inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InferenceSlot {
    /// One of the inference buffers (numbered from 0; a chain of layers alternates between two,
    /// each level of nested residual blocks keeps one more).
    Buffer(usize),
    /// The network's output, kept in the workspace for the caller.
    Output,
    /// The same storage as the op's input (flatten).
    View,
}
