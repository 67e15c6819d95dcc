//! The kernel's layer rule, checked: a module names functions and types of its own layer and of
//! the layers below, never of a layer above (`docs/architecture.md`, "Layers").
//!
//! Every `crate::` and `super::` path in the kernel's sources (in `use` items, with their brace
//! groups, and inline), and every path through a name a `use` brought in (`smp::kick` after
//! `use crate::arch::x86_64::smp`), is resolved to the layer of the module it names; comments
//! are skipped. The services outside the order (console output, timers, the boot information,
//! stopping the machine) may be used by every layer; they themselves use only the layers
//! below `sched`. The few places that name something above them on purpose are listed in
//! [`ALLOWED`], each with its reason. `cargo xtask check` runs it, and so does a host test,
//! which `cargo xtask test` runs.

use std::collections::BTreeMap;
use std::path::Path;

use crate::Result;

/// The layers, from the top down; a module may name its own and those after it.
const ORDER: &[&str] = &[
    "main", "top", "domain", "pv", "sched", "frames", "hardware", "memory", "cpu",
];
/// Used by every layer, outside the order.
const SERVICES: &str = "services";
/// The lowest layer the services may use.
const SERVICES_USE_FROM: &str = "frames";

/// Uses above the user's own layer that are deliberate: (file, path prefix, why).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "console/mod.rs",
        "crate::pv::domain::Domain",
        "a domain's log-rate limiter is the type `gwarn!` takes",
    ),
    (
        "arch/x86_64/boot.rs",
        "crate::hestia_main",
        "the boot code jumps to the kernel's entry",
    ),
];

/// The layer of the module at `path` (segments after `crate`), or `None` for a path into
/// another crate.
fn layer_of(path: &[&str]) -> &'static str {
    match path {
        ["arch", "x86_64", "cpu", ..] => "cpu",
        ["arch", ..] | ["drivers", ..] => "hardware",
        ["mm", "frametable" | "guest", ..] => "frames",
        ["mm", ..] => "memory",
        ["sched", ..] => "sched",
        ["console", "keys", ..] | ["hypercall", ..] => "top",
        ["console", "ring", ..] | ["pv", ..] => "pv",
        ["domain", ..] => "domain",
        ["console", ..] | ["timer", ..] | ["bootinfo", ..] | ["machine", ..] => SERVICES,
        // The console's macros, exported at the crate root.
        [
            "info" | "warn" | "error" | "debug" | "ginfo" | "gwarn" | "gerror" | "gdebug"
            | "print_raw",
            ..,
        ] => SERVICES,
        _ => "main",
    }
}

fn rank(layer: &str) -> usize {
    ORDER.iter().position(|l| *l == layer).unwrap_or(0)
}

/// May a module of layer `from` name one of layer `to`?
fn allowed(from: &str, to: &str) -> bool {
    match (from, to) {
        (_, SERVICES) => true,
        (SERVICES, to) => rank(to) >= rank(SERVICES_USE_FROM),
        (from, to) => rank(to) >= rank(from),
    }
}

/// The module path of a source file (relative to the kernel's `src`).
fn module_of(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "main") {
        parts.pop();
    }
    parts
}

/// `text` without its comments (line comments; block comments are not used in the kernel).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The full paths a `use` tree names, each with the name it is known by in the file.
fn expand_use(tree: &str, prefix: &str, out: &mut Vec<(String, String)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let base = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, base);
        for item in split_top_level(inner) {
            expand_use(item, &base, out);
        }
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim())),
        None => (tree, None),
    };
    if path.is_empty() || path == "*" {
        return;
    }
    let full = if path == "self" {
        prefix.to_owned()
    } else {
        join(prefix, path)
    };
    let name = alias
        .unwrap_or_else(|| full.rsplit("::").next().unwrap_or(""))
        .to_owned();
    out.push((full, name));
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

/// `a, {b, c}, d` split at the commas outside braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// `path` (as written, `crate::`/`super::`-relative) as segments after `crate`, for a file in
/// module `module`; `None` for another crate's path.
fn resolve(path: &str, module: &[String]) -> Option<Vec<String>> {
    let mut segs = path.split("::").map(str::trim);
    let mut base: Vec<String> = match segs.next()? {
        "crate" => Vec::new(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        "self" => module.to_vec(),
        _ => return None,
    };
    for s in segs {
        match s {
            "super" => {
                base.pop();
            }
            "self" => {}
            s => base.push(s.to_owned()),
        }
    }
    Some(base)
}

/// One use of a module above the user's layer.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the kernel's `src`.
    pub file: String,
    /// The path it names, from `crate`.
    pub path: String,
    /// The file's layer and the named module's.
    pub layers: (&'static str, &'static str),
}

/// Every path `source` (the file `file`) names, resolved from `crate`.
fn paths_named(file: &str, source: &str) -> Vec<String> {
    let module = module_of(file);
    let text = strip_comments(source);
    let mut named = Vec::new();
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    // `use` items, whole (they may span lines).
    let mut rest = text.as_str();
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let mut items = Vec::new();
        expand_use(&rest[..end], "", &mut items);
        for (path, name) in items {
            if let Some(segs) = resolve(&path, &module).filter(|s| !s.is_empty()) {
                let full = segs.join("::");
                aliases.insert(name, full.clone());
                named.push(full);
            }
        }
    }
    // Inline paths: `crate::`, `super::`, and through the names `use` brought in (a macro's
    // `$crate::` is the macro's own crate, resolved where it expands).
    let is_path_char = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    for run in text.split(|c: char| !is_path_char(c)) {
        let at = i;
        i += run.len() + 1;
        let path = run.trim_matches(':');
        let Some((first, tail)) = path.split_once("::") else {
            continue;
        };
        if text[..at].ends_with('$') {
            continue;
        }
        let full = match resolve(path, &module) {
            Some(segs) => segs.join("::"),
            None => match aliases.get(first) {
                Some(full) => format!("{full}::{tail}"),
                None => continue,
            },
        };
        if !full.is_empty() {
            named.push(full);
        }
    }
    named
}

/// The uses above their layer in `source`, the file `file` (relative to the kernel's `src`).
pub fn violations_in(file: &str, source: &str) -> Vec<Violation> {
    let from = layer_of(
        &module_of(file)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut out: Vec<Violation> = Vec::new();
    for path in paths_named(file, source) {
        let segs: Vec<&str> = path.split("::").collect();
        let to = layer_of(&segs);
        let excused = ALLOWED
            .iter()
            .any(|(f, p, _)| *f == file && format!("crate::{path}").starts_with(p));
        if !allowed(from, to) && !excused && !out.iter().any(|v| v.path == path) {
            out.push(Violation {
                file: file.to_owned(),
                path,
                layers: (from, to),
            });
        }
    }
    out
}

/// Every use above its layer in the kernel's sources under `src`.
pub fn violations(src: &Path) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src)?.to_string_lossy().replace('\\', "/");
                out.extend(violations_in(&rel, &std::fs::read_to_string(&p)?));
            }
        }
    }
    out.sort_by(|a, b| (&a.file, &a.path).cmp(&(&b.file, &b.path)));
    Ok(out)
}

/// Checks the kernel's layers (`cargo xtask check`).
pub fn check() -> Result<()> {
    let v = violations(&crate::root_dir().join("hypervisor/kernel/src"))?;
    for x in &v {
        println!(
            "layers: {} ({}) names {} ({}), a layer above it",
            x.file, x.layers.0, x.path, x.layers.1
        );
    }
    if v.is_empty() {
        println!("layers: every kernel module names only its own layer and those below");
        Ok(())
    } else {
        Err(format!("{} uses of a layer above", v.len()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_reads_downwards() {
        let v = violations(&crate::root_dir().join("hypervisor/kernel/src")).unwrap();
        assert!(v.is_empty(), "uses of a layer above: {v:#?}");
    }

    #[test]
    fn finds_a_call_up_through_a_use_group() {
        let src = "use crate::arch::x86_64::{cpu, smp};\nuse crate::{domain::lookup, info};\n";
        let v = violations_in("sched/mod.rs", src);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].path, "domain::lookup");
        assert_eq!(v[0].layers, ("sched", "domain"));
    }

    #[test]
    fn finds_inline_and_aliased_paths() {
        // Inline, through `super`, and through a name `use` brought in.
        let inline = "fn f() { crate::hypercall::dump(w); }";
        assert_eq!(
            violations_in("pv/mod.rs", inline)[0].path,
            "hypercall::dump"
        );
        let up = "fn f() { super::super::pv::current(); }";
        assert_eq!(violations_in("mm/guest.rs", up)[0].path, "pv::current");
        let aliased = "use crate::mm;\nfn f() { mm::frametable::init(); }";
        let v = violations_in("arch/x86_64/smp.rs", aliased);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].layers, ("hardware", "frames"));
    }

    #[test]
    fn allows_downwards_services_and_comments() {
        let src = "//! Calls `crate::domain::lookup` in prose only.\n\
                   use super::domain::Domain;\nuse crate::sched;\nuse crate::mm::frametable;\n\
                   fn f() { crate::info!(\"x\"); crate::timer::add(0, t); sched::wake(d); }\n\
                   macro_rules! m { () => { $crate::domain::x() } }";
        assert_eq!(violations_in("pv/events.rs", src), Vec::new());
        // The services use only what is below the scheduler.
        let svc = "use crate::arch::x86_64::apic;\nfn f() { crate::sched::notify(); }";
        assert_eq!(
            violations_in("timer.rs", svc)[0].layers,
            ("services", "sched")
        );
    }

    #[test]
    fn the_cpu_is_below_memory_and_the_rest_of_the_hardware_above() {
        let mm = "use crate::arch::x86_64::cpu;\nuse crate::arch::x86_64::smp;";
        let v = violations_in("mm/mod.rs", mm);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].path, "arch::x86_64::smp");
        assert!(violations_in("arch/x86_64/smp.rs", "use crate::mm;").is_empty());
        assert_eq!(
            violations_in("arch/x86_64/cpu.rs", "use crate::mm;")[0].layers,
            ("cpu", "memory")
        );
    }
}
