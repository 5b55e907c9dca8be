//! How `network!` names what it generates, read by the macro and by the ONNX importer (whose
//! weights must carry the names the macro gives): each layer of a list is its kind numbered
//! within the list (`conv1`, `conv2`, `res1`), the layers of a residual block are under the
//! block's name (`res1.conv1`), a block's projection is `res1.shortcut`, and a network's file
//! and module names are its type name in snake case.

/// The name of residual blocks in the numbering (`res1`).
pub const BLOCK: &str = "res";

/// The name of a block's projection, after the block's (`res1.shortcut`).
pub const SHORTCUT: &str = "shortcut";

/// Numbers the items of one list by kind: `conv1`, `relu1`, `conv2`, each after `prefix`.
#[derive(Clone, Debug, Default)]
pub struct Numbering {
    prefix: String,
    counts: Vec<(String, usize)>,
}

impl Numbering {
    /// The numbering of the top list.
    pub fn top() -> Self {
        Self::default()
    }

    /// The numbering of the list inside the block named `block` (`res1.`).
    pub fn inside(block: &str) -> Self {
        Numbering {
            prefix: format!("{block}."),
            counts: Vec::new(),
        }
    }

    /// The next name for an item of `kind`.
    pub fn next(&mut self, kind: &str) -> String {
        let count = match self.counts.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.push((kind.to_string(), 1));
                1
            }
        };
        format!("{}{kind}{count}", self.prefix)
    }
}

/// The projection of the block named `block`: `res1.shortcut`.
pub fn shortcut(block: &str) -> String {
    format!("{block}.{SHORTCUT}")
}

/// `MnistCnn` → `mnist_cnn`.
pub fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_numbered_by_kind_within_their_list() {
        let mut top = Numbering::top();
        assert_eq!(top.next("conv"), "conv1");
        assert_eq!(top.next("relu"), "relu1");
        assert_eq!(top.next("conv"), "conv2");
        let block = top.next(BLOCK);
        let mut inner = Numbering::inside(&block);
        assert_eq!(inner.next("conv"), "res1.conv1");
        assert_eq!(shortcut(&block), "res1.shortcut");
        assert_eq!(snake_case("ResNet18"), "res_net18");
    }
}
