//! twill control plane.
