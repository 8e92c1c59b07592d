//! The netpol model: three namespaces x, y, z with pods a, b, c in each,
//! truth tables over every ordered pod pair, and the expected
//! [`Reachability`] the cases build — the shape of upstream Kubernetes'
//! test/e2e/network/netpol (model.go, truthtable.go, reachability.go).
//!
//! Pure data: no namespaces, sockets or processes here.

use std::fmt::Write as _;

/// The model's namespaces, in table order.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods of every namespace, in table order.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves, on TCP and on UDP.
pub const PORTS: [u16; 2] = [80, 81];

/// A transport protocol of a probe and of a served port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, `UDP`).
    pub fn k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The lower-case spelling used in port names (`serve-80-tcp`).
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The container port name upstream gives `port`/`protocol`.
pub fn port_name(port: u16, protocol: Protocol) -> String {
    format!("serve-{port}-{}", protocol.lower())
}

/// Every pod as `ns/pod`, in table order (x/a, x/b, x/c, y/a, …).
pub fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

/// Splits `ns/pod`.
pub fn split(pod: &str) -> (&str, &str) {
    pod.split_once('/')
        .unwrap_or_else(|| panic!("expected ns/pod, found {pod:?}"))
}

/// Matches pods by namespace, pod name, both or neither (upstream `Peer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    pub ns: Option<&'a str>,
    pub pod: Option<&'a str>,
}

impl<'a> Peer<'a> {
    /// Every pod.
    pub fn any() -> Peer<'a> {
        Peer::default()
    }

    /// Every pod of namespace `ns`.
    pub fn ns(ns: &'a str) -> Peer<'a> {
        Peer {
            ns: Some(ns),
            pod: None,
        }
    }

    /// The pod `ns/pod` (`"x/a"`).
    pub fn pod(pod: &'a str) -> Peer<'a> {
        let (ns, pod) = split(pod);
        Peer {
            ns: Some(ns),
            pod: Some(pod),
        }
    }

    /// Pods named `pod` in every namespace.
    pub fn named(pod: &'a str) -> Peer<'a> {
        Peer {
            ns: None,
            pod: Some(pod),
        }
    }

    fn matches(&self, pod: &str) -> bool {
        let (ns, name) = split(pod);
        self.ns.is_none_or(|n| n == ns) && self.pod.is_none_or(|p| p == name)
    }
}

/// One boolean (or not yet known) per ordered pair of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthTable {
    items: Vec<String>,
    values: Vec<Option<bool>>,
}

impl TruthTable {
    /// A table over `items`, every cell `default`.
    pub fn new(items: Vec<String>, default: Option<bool>) -> TruthTable {
        let n = items.len();
        TruthTable {
            items,
            values: vec![default; n * n],
        }
    }

    fn index(&self, item: &str) -> usize {
        self.items
            .iter()
            .position(|i| i == item)
            .unwrap_or_else(|| panic!("{item:?} is not in the table"))
    }

    /// The items, in order.
    pub fn items(&self) -> &[String] {
        &self.items
    }

    /// Sets from → to.
    pub fn set(&mut self, from: &str, to: &str, value: bool) {
        let (f, t, n) = (self.index(from), self.index(to), self.items.len());
        self.values[f * n + t] = Some(value);
    }

    /// from → to, if set.
    pub fn get(&self, from: &str, to: &str) -> Option<bool> {
        let (f, t, n) = (self.index(from), self.index(to), self.items.len());
        self.values[f * n + t]
    }

    /// Whether every cell is set.
    pub fn is_complete(&self) -> bool {
        self.values.iter().all(Option::is_some)
    }

    /// A table whose cells say whether `self` and `other` agree.
    pub fn compare(&self, other: &TruthTable) -> TruthTable {
        assert_eq!(self.items, other.items, "tables over different items");
        TruthTable {
            items: self.items.clone(),
            values: self
                .values
                .iter()
                .zip(&other.values)
                .map(|(a, b)| Some(a.is_some() && a == b))
                .collect(),
        }
    }

    /// Upstream's layout: a header of destinations, one row per source,
    /// `.` for true, `X` for false, `?` for unset.
    pub fn pretty(&self) -> String {
        let w = self.items.iter().map(String::len).max().unwrap_or(1).max(1) + 2;
        let mut out = format!("{:<w$}", "-");
        for to in &self.items {
            let _ = write!(out, "{to:<w$}");
        }
        for from in &self.items {
            let _ = write!(out, "\n{from:<w$}");
            for to in &self.items {
                let mark = match self.get(from, to) {
                    None => "?",
                    Some(true) => ".",
                    Some(false) => "X",
                };
                let _ = write!(out, "{mark:<w$}");
            }
        }
        out
    }
}

/// What the cluster should look like: an expected truth table over every
/// pod, built with upstream's `Expect*` calls.
#[derive(Debug, Clone)]
pub struct Reachability {
    pub expected: TruthTable,
}

/// The outcome of comparing an observed table with a [`Reachability`].
#[derive(Debug, Clone)]
pub struct Summary {
    /// Pairs that matched (loopback excluded).
    pub right: usize,
    /// Pairs that did not (loopback excluded).
    pub wrong: usize,
    /// Loopback pairs, never counted (upstream's `ignoreLoopback`: a pod
    /// reaching itself never leaves its namespace, so no CNI sees it).
    pub ignored: usize,
    /// Per pair: did expected and observed agree?
    pub comparison: TruthTable,
}

impl Reachability {
    /// Every pod pair expected `default`.
    pub fn new(default: bool) -> Reachability {
        Reachability {
            expected: TruthTable::new(all_pods(), Some(default)),
        }
    }

    /// from → to is expected `connected`.
    pub fn expect(&mut self, from: &str, to: &str, connected: bool) -> &mut Self {
        self.expected.set(from, to, connected);
        self
    }

    /// Everything into `pod` is expected `connected`.
    pub fn expect_all_ingress(&mut self, pod: &str, connected: bool) -> &mut Self {
        for from in all_pods() {
            self.expected.set(&from, pod, connected);
        }
        self
    }

    /// Everything out of `pod` is expected `connected`.
    pub fn expect_all_egress(&mut self, pod: &str, connected: bool) -> &mut Self {
        for to in all_pods() {
            self.expected.set(pod, &to, connected);
        }
        self
    }

    /// Every pair whose source matches `from` and destination matches `to`.
    pub fn expect_peer(&mut self, from: Peer<'_>, to: Peer<'_>, connected: bool) -> &mut Self {
        for f in all_pods().iter().filter(|p| from.matches(p)) {
            for t in all_pods().iter().filter(|p| to.matches(p)) {
                self.expected.set(f, t, connected);
            }
        }
        self
    }

    /// Compares `observed` with the expectation.
    pub fn summary(&self, observed: &TruthTable) -> Summary {
        let comparison = self.expected.compare(observed);
        let (mut right, mut wrong, mut ignored) = (0, 0, 0);
        for from in comparison.items() {
            for to in comparison.items() {
                if from == to {
                    ignored += 1;
                } else if comparison.get(from, to) == Some(true) {
                    right += 1;
                } else {
                    wrong += 1;
                }
            }
        }
        Summary {
            right,
            wrong,
            ignored,
            comparison,
        }
    }

    /// Upstream's report: counts, then the expected, observed and
    /// comparison tables.
    pub fn report(&self, observed: &TruthTable) -> String {
        let s = self.summary(observed);
        format!(
            "reachability: correct:{}, incorrect:{}, ignored (loopback):{}, result={}\n\n\
             expected:\n\n{}\n\nobserved:\n\n{}\n\ncomparison:\n\n{}\n",
            s.right,
            s.wrong,
            s.ignored,
            s.wrong == 0,
            self.expected.pretty(),
            observed.pretty(),
            s.comparison.pretty()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_expectations_set_the_cells_upstream_sets() {
        let mut r = Reachability::new(true);
        r.expect_peer(Peer::any(), Peer::ns("x"), false)
            .expect("y/b", "x/a", true)
            .expect_all_egress("z/c", false);
        assert_eq!(r.expected.get("y/a", "x/c"), Some(false));
        assert_eq!(r.expected.get("y/b", "x/a"), Some(true));
        assert_eq!(r.expected.get("x/a", "y/a"), Some(true));
        assert_eq!(r.expected.get("z/c", "y/a"), Some(false));
        r.expect_all_ingress("y/a", true);
        assert_eq!(r.expected.get("z/c", "y/a"), Some(true));
        r.expect_peer(Peer::named("b"), Peer::pod("z/a"), false);
        assert_eq!(r.expected.get("x/b", "z/a"), Some(false));
        assert_eq!(r.expected.get("x/a", "z/a"), Some(true));
    }

    #[test]
    fn model_summary_ignores_loopback_and_counts_the_rest() {
        let r = Reachability::new(true);
        let mut observed = TruthTable::new(all_pods(), Some(true));
        observed.set("x/a", "x/a", false);
        observed.set("x/a", "y/b", false);
        let s = r.summary(&observed);
        assert_eq!((s.right, s.wrong, s.ignored), (71, 1, 9));
        let report = r.report(&observed);
        assert!(report.contains("incorrect:1"), "{report}");
        let row = report.lines().rev().find(|l| l.starts_with("x/a")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>()[1..6],
            ["X", ".", ".", ".", "X"]
        );
    }

    #[test]
    fn model_unset_cells_print_as_question_marks() {
        let mut t = TruthTable::new(vec!["x/a".into(), "x/b".into()], None);
        t.set("x/a", "x/b", true);
        assert!(!t.is_complete());
        assert_eq!(
            t.pretty(),
            "-    x/a  x/b  \nx/a  ?    .    \nx/b  ?    ?    "
        );
    }
}
