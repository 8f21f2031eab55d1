//! Examples and benches for the workspace.
