//! Output that ignores a closed stdout or stderr instead of panicking (a
//! panic while guards unwind would abort before the rest of the cleanup).

/// `println!` that ignores a closed stdout (tables, results).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr (progress lines).
macro_rules! progress {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
