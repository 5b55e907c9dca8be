//! Shapes that disagree do not compile, and the error says which shapes.
//!
//! Chaining mismatched layers is a type error (`cargo check` sees it); a layer whose own shapes
//! are impossible (a window larger than its input) fails a constant evaluated when the layer is
//! built, which only a full build reports. The passing case makes trybuild build rather than
//! only check, so both kinds are exercised.

#[test]
fn shape_errors_do_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/compile_pass/*.rs");
    cases.compile_fail("tests/compile_fail/*.rs");
}
