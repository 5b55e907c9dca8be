//! How a layer kind declares its arguments ([`Param`]), and the values the macro decodes for
//! them ([`Args`]) before the kind's entry builds a [`LayerKind`](crate::LayerKind) from them.

use crate::padding::Padding;

/// What an argument accepts. The macro checks each written argument against its type, so an
/// entry's build function only checks what the type cannot say (a rate below 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    /// A whole number of at least 1.
    PositiveInt,
    /// A number, possibly negative or fractional.
    Number,
    /// One of these words.
    Word(&'static [&'static str]),
    /// A padding: `same`, `valid`, a whole number of at least 0, or `(top, bottom, left,
    /// right)`.
    Padding,
}

/// One declared argument of a layer kind.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// A positional argument's meaning (`number of filters`), or an option's name (`stride`),
    /// as messages name it.
    pub name: &'static str,
    /// What it accepts.
    pub ty: ArgType,
}

/// A decoded argument value, of its parameter's type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgValue {
    /// A [`ArgType::PositiveInt`].
    Int(usize),
    /// A [`ArgType::Number`].
    Number(f64),
    /// A [`ArgType::Word`]: one of its words.
    Word(&'static str),
    /// A [`ArgType::Padding`].
    Padding(Padding),
}

/// Which argument a problem is about, to point at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgRef {
    /// The positional argument at this index.
    Positional(usize),
    /// The option at this index of the entry's options.
    Option(usize),
}

/// A written argument the kind refuses, and why (the message follows "`spec`: ").
#[derive(Clone, Debug, PartialEq)]
pub struct ArgProblem {
    /// The argument at fault.
    pub arg: ArgRef,
    /// What is wrong with it.
    pub message: String,
}

/// A layer's decoded arguments: every positional one the entry declares, and each option if
/// written, in the entry's order.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// The positional arguments.
    pub positional: Vec<ArgValue>,
    /// The options, `None` where not written.
    pub options: Vec<Option<ArgValue>>,
}

impl Args {
    /// Positional argument `index`, a whole number.
    pub fn int(&self, index: usize) -> usize {
        match self.positional[index] {
            ArgValue::Int(value) => value,
            other => unreachable!("positional argument {index} is an integer, not {other:?}"),
        }
    }

    /// Positional argument `index`, a number.
    pub fn number(&self, index: usize) -> f64 {
        match self.positional[index] {
            ArgValue::Number(value) => value,
            other => unreachable!("positional argument {index} is a number, not {other:?}"),
        }
    }

    /// Option `index`, a whole number, or `default` when not written.
    pub fn option_int(&self, index: usize, default: usize) -> usize {
        match self.options[index] {
            Some(ArgValue::Int(value)) => value,
            None => default,
            Some(other) => unreachable!("option {index} is an integer, not {other:?}"),
        }
    }

    /// Option `index`, a number, if written.
    pub fn option_number(&self, index: usize) -> Option<f64> {
        match self.options[index] {
            Some(ArgValue::Number(value)) => Some(value),
            None => None,
            Some(other) => unreachable!("option {index} is a number, not {other:?}"),
        }
    }

    /// Option `index`, a padding, if written.
    pub fn option_padding(&self, index: usize) -> Option<Padding> {
        match self.options[index] {
            Some(ArgValue::Padding(padding)) => Some(padding),
            None => None,
            Some(other) => unreachable!("option {index} is a padding, not {other:?}"),
        }
    }

    /// Option `index`, a word, if written.
    pub fn option_word(&self, index: usize) -> Option<&'static str> {
        match self.options[index] {
            Some(ArgValue::Word(word)) => Some(word),
            None => None,
            Some(other) => unreachable!("option {index} is a word, not {other:?}"),
        }
    }
}
