//! Code generator for the seL4 5.0.0 AArch64 bindings.
//!
//! Shared by `build.rs` (which writes the generated Rust into `OUT_DIR`) and the
//! crate's host unit tests (which check it against hand-checked values and the
//! kernel's own Python generators). Everything here is plain `std` Rust with no
//! dependencies so the build has nothing to download.
//!
//! What it reads, all from the kernel source tree:
//! - `include/api/syscall.xml`: syscall numbers (numbered -1 downwards in file
//!   order, *including* disabled ones: `syscall_header_gen.py` decrements its
//!   counter in the template, outside the `#if`);
//! - `libsel4/include/interfaces/sel4.xml`, then
//!   `libsel4/sel4_arch_include/aarch64/interfaces/sel4arch.xml`, then
//!   `libsel4/arch_include/arm/interfaces/sel4arch.xml`: invocation labels
//!   (three C enums chained in that order by `invocation_header_gen.py`; a method
//!   whose `condition` is false is dropped and *shifts* every later label) and the
//!   method signatures the stubs are generated from (`syscall_stub_gen.py`);
//! - `libsel4/include/sel4/objecttype.h`, `.../aarch64/.../objecttype.h`,
//!   `.../arm/.../objecttype.h`: object type numbers (C enums with `#ifdef`s);
//! - `libsel4/include/sel4/errors.h`: error codes.
//!
//! Conditions are evaluated against the `CONFIG_` defines of the kernel
//! configuration (`autoconf.h` plus command-line defines).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Configuration: a set of preprocessor defines
// ---------------------------------------------------------------------------

/// The kernel configuration: macro name -> replacement text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub defines: BTreeMap<String, String>,
}

/// Used when `SEL4_AUTOCONF` is unset: DESIGN.md section 3's configuration for
/// our QEMU `virt` platform, as a debug build (the kernel's `DEBUG=y` adds
/// `CONFIG_DEBUG_BUILD` on the command line; `CONFIG_PRINTING` follows from it).
pub const DEFAULT_DEFINES: &[(&str, &str)] = &[
    ("CONFIG_ARCH_ARM", "1"),
    ("CONFIG_ARCH_AARCH64", "1"),
    ("CONFIG_ARCH_ARM_V8A", "1"),
    ("CONFIG_ARM_CORTEX_A53", "1"),
    ("CONFIG_PLAT_VIRT", "1"),
    ("CONFIG_WORD_SIZE", "64"),
    ("CONFIG_HAVE_FPU", "1"),
    ("CONFIG_IPC_BUF_TPIDRURW", "1"),
    ("CONFIG_HAVE_ARCH_TIMER", "1"),
    ("CONFIG_ROOT_CNODE_SIZE_BITS", "14"),
    ("CONFIG_TIMER_TICK_MS", "2"),
    ("CONFIG_TIME_SLICE", "5"),
    ("CONFIG_RETYPE_FAN_OUT_LIMIT", "256"),
    ("CONFIG_NUM_DOMAINS", "1"),
    ("CONFIG_NUM_PRIORITIES", "256"),
    ("CONFIG_MAX_NUM_NODES", "1"),
    ("CONFIG_KERNEL_STACK_BITS", "12"),
    ("CONFIG_FPU_MAX_RESTORES_SINCE_SWITCH", "64"),
    ("CONFIG_MAX_NUM_WORK_UNITS_PER_PREEMPTION", "100"),
    ("CONFIG_MAX_NUM_BOOTINFO_UNTYPED_CAPS", "230"),
    ("CONFIG_MAX_NUM_TRACE_POINTS", "0"),
    ("CONFIG_KERNEL_MASTER", "1"),
    ("CONFIG_FASTPATH", "1"),
    ("CONFIG_DEBUG_BUILD", "1"),
    ("CONFIG_PRINTING", "1"),
    ("CONFIG_USER_STACK_TRACE_LENGTH", "16"),
];

impl Config {
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Config {
        let mut c = Config::default();
        for (k, v) in pairs {
            c.defines.insert((*k).to_string(), (*v).to_string());
        }
        c
    }

    pub fn default_virt() -> Config {
        Config::from_pairs(DEFAULT_DEFINES)
    }

    /// Parse `-D`-style extra defines: `NAME` or `NAME=VALUE`, separated by
    /// whitespace or commas (the `SEL4_DEFINES` variable).
    pub fn add_command_line(&mut self, spec: &str) {
        for item in spec.split(|c: char| c.is_whitespace() || c == ',') {
            let item = item.trim().trim_start_matches("-D");
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((k, v)) => self.defines.insert(k.to_string(), v.to_string()),
                None => self.defines.insert(item.to_string(), "1".to_string()),
            };
        }
    }

    /// Apply an `autoconf.h`: its `#define`s (under its own `#if`s) are added.
    pub fn add_autoconf(&mut self, text: &str) {
        let _ = preprocess(text, self);
    }

    pub fn is_defined(&self, name: &str) -> bool {
        self.defines.contains_key(name)
    }

    /// Integer value of a macro, if it is defined as an integer literal.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.defines.get(name).and_then(|v| parse_c_int(v))
    }

    /// Evaluate a C preprocessor condition (`defined X`, `defined(X)`,
    /// comparisons, `!`, `&&`, `||`, parentheses, integer literals).
    pub fn eval(&self, expr: &str) -> bool {
        let expr = expr.trim();
        if expr.is_empty() {
            return true;
        }
        let tokens = tokenize(expr);
        let mut p = ExprParser {
            toks: &tokens,
            pos: 0,
            cfg: self,
        };
        let v = p.or();
        if p.pos != tokens.len() {
            panic!("cannot evaluate condition {expr:?}: trailing tokens");
        }
        v != 0
    }

    /// The defines as a C header, for host tests that compile the kernel's
    /// generated headers with the same configuration.
    pub fn to_c_header(&self) -> String {
        let mut s = String::from(
            "/* Generated by sel4-abi build.rs: the configuration it was built with. */\n",
        );
        for (k, v) in &self.defines {
            let _ = writeln!(s, "#define {k} {v}");
        }
        s
    }
}

pub fn parse_c_int(v: &str) -> Option<i64> {
    let v = v.trim().trim_end_matches(['u', 'U', 'l', 'L']);
    let (neg, v) = match v.strip_prefix('-') {
        Some(r) => (true, r.trim()),
        None => (false, v),
    };
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if v.len() > 1 && v.starts_with('0') {
        i64::from_str_radix(&v[1..], 8).ok()?
    } else {
        v.parse::<i64>().ok()?
    };
    Some(if neg { -n } else { n })
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(i64),
    Op(&'static str),
}

fn tokenize(s: &str) -> Vec<Tok> {
    const OPS: &[&str] = &[
        "&&", "||", "==", "!=", ">=", "<=", "<<", ">>", "(", ")", "!", ">", "<", "+", "-", "*",
    ];
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    'outer: while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let st = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(s[st..i].to_string()));
            continue;
        }
        if c.is_ascii_digit() {
            let st = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric()) {
                i += 1;
            }
            let n = parse_c_int(&s[st..i]).unwrap_or_else(|| panic!("bad number in {s:?}"));
            out.push(Tok::Num(n));
            continue;
        }
        for op in OPS {
            if s[i..].starts_with(op) {
                out.push(Tok::Op(op));
                i += op.len();
                continue 'outer;
            }
        }
        panic!("cannot tokenize condition {s:?} at {i}");
    }
    out
}

struct ExprParser<'a> {
    toks: &'a [Tok],
    pos: usize,
    cfg: &'a Config,
}

impl ExprParser<'_> {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }
    fn eat(&mut self, op: &str) -> bool {
        if self.peek_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> i64 {
        let mut v = self.and();
        while self.eat("||") {
            let r = self.and();
            v = ((v != 0) || (r != 0)) as i64;
        }
        v
    }
    fn and(&mut self) -> i64 {
        let mut v = self.cmp();
        while self.eat("&&") {
            let r = self.cmp();
            v = ((v != 0) && (r != 0)) as i64;
        }
        v
    }
    fn cmp(&mut self) -> i64 {
        let mut v = self.add();
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op(o)) if ["==", "!=", ">=", "<=", ">", "<"].contains(o) => *o,
                _ => return v,
            };
            self.pos += 1;
            let r = self.add();
            v = match op {
                "==" => v == r,
                "!=" => v != r,
                ">=" => v >= r,
                "<=" => v <= r,
                ">" => v > r,
                _ => v < r,
            } as i64;
        }
    }
    fn add(&mut self) -> i64 {
        let mut v = self.unary();
        loop {
            if self.eat("+") {
                v += self.unary();
            } else if self.eat("-") {
                v -= self.unary();
            } else if self.eat("*") {
                v *= self.unary();
            } else if self.eat("<<") {
                v <<= self.unary();
            } else if self.eat(">>") {
                v >>= self.unary();
            } else {
                return v;
            }
        }
    }
    fn unary(&mut self) -> i64 {
        if self.eat("!") {
            return (self.unary() == 0) as i64;
        }
        if self.eat("-") {
            return -self.unary();
        }
        if self.eat("(") {
            let v = self.or();
            assert!(self.eat(")"), "missing ')'");
            return v;
        }
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                n
            }
            Some(Tok::Ident(id)) if id == "defined" => {
                self.pos += 1;
                let paren = self.eat("(");
                let name = match self.toks.get(self.pos) {
                    Some(Tok::Ident(n)) => n.clone(),
                    t => panic!("expected a name after defined, got {t:?}"),
                };
                self.pos += 1;
                if paren {
                    assert!(self.eat(")"), "missing ')' after defined(");
                }
                self.cfg.is_defined(&name) as i64
            }
            Some(Tok::Ident(id)) => {
                self.pos += 1;
                // An undefined identifier is 0, as in C; a defined one without an
                // integer value (e.g. `#define X`) counts as 1.
                match self.cfg.defines.get(&id) {
                    None => 0,
                    Some(v) => parse_c_int(v).unwrap_or(1),
                }
            }
            t => panic!("unexpected token {t:?} in condition"),
        }
    }
}

/// Strip C comments and join continuation lines.
pub fn strip_c_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// A small C preprocessor: evaluates `#if/#ifdef/#ifndef/#elif/#else/#endif`,
/// applies `#define`/`#undef` to `cfg` (in active regions only), drops
/// `#include`s and returns the active non-directive text.
pub fn preprocess(text: &str, cfg: &mut Config) -> String {
    // Each frame: (this branch active, some branch already taken, parent active)
    let mut stack: Vec<(bool, bool, bool)> = Vec::new();
    let mut out = String::new();
    let active = |stack: &Vec<(bool, bool, bool)>| stack.last().map(|f| f.0).unwrap_or(true);
    for line in strip_c_comments(text).lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix('#') {
            let d = d.trim();
            let (kw, rest) = match d.find(|c: char| c.is_whitespace() || c == '(') {
                Some(p) => (&d[..p], d[p..].trim()),
                None => (d, ""),
            };
            let cur = active(&stack);
            match kw {
                "if" => {
                    let v = cur && cfg.eval(rest);
                    stack.push((v, v, cur));
                }
                "ifdef" => {
                    let v = cur && cfg.is_defined(rest);
                    stack.push((v, v, cur));
                }
                "ifndef" => {
                    let v = cur && !cfg.is_defined(rest);
                    stack.push((v, v, cur));
                }
                "elif" => {
                    let f = stack.last_mut().expect("#elif without #if");
                    let v = f.2 && !f.1 && cfg.eval(rest);
                    f.0 = v;
                    f.1 |= v;
                }
                "else" => {
                    let f = stack.last_mut().expect("#else without #if");
                    f.0 = f.2 && !f.1;
                    f.1 = true;
                }
                "endif" => {
                    stack.pop().expect("#endif without #if");
                }
                "define" if cur => {
                    let (name, value) = match rest.find(|c: char| c.is_whitespace() || c == '(') {
                        Some(p) => (&rest[..p], rest[p..].trim()),
                        None => (rest, ""),
                    };
                    cfg.defines.insert(name.to_string(), value.to_string());
                }
                "undef" if cur => {
                    cfg.defines.remove(rest);
                }
                _ => {}
            }
            continue;
        }
        if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A tiny XML reader (the interface files use elements, attributes, comments)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// All descendants named `name`, in document order (like minidom's
    /// `getElementsByTagName`).
    pub fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.descendants(name, out);
        }
    }
    pub fn all(&self, name: &str) -> Vec<&Element> {
        let mut v = Vec::new();
        self.descendants(name, &mut v);
        v
    }
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Parse an XML document; returns a synthetic root element whose children are
/// the top-level elements. Text content is ignored.
pub fn parse_xml(text: &str) -> Element {
    let b = text.as_bytes();
    let mut i = 0;
    let mut stack: Vec<Element> = vec![Element {
        name: "#document".into(),
        ..Default::default()
    }];
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        if text[i..].starts_with("<!--") {
            i += text[i..].find("-->").expect("unterminated comment") + 3;
        } else if text[i..].starts_with("<?") {
            i += text[i..].find("?>").expect("unterminated <?") + 2;
        } else if text[i..].starts_with("<![CDATA[") {
            i += text[i..].find("]]>").expect("unterminated CDATA") + 3;
        } else if text[i..].starts_with("<!") {
            i += text[i..].find('>').expect("unterminated <!") + 1;
        } else if text[i..].starts_with("</") {
            let end = i + text[i..].find('>').expect("unterminated end tag");
            let name = text[i + 2..end].trim();
            let el = stack.pop().expect("unbalanced XML");
            assert_eq!(el.name, name, "mismatched end tag");
            stack.last_mut().expect("unbalanced XML").children.push(el);
            i = end + 1;
        } else {
            // Start tag: name, attributes, optional '/'.
            i += 1;
            let st = i;
            while i < b.len() && !(b[i] as char).is_whitespace() && b[i] != b'>' && b[i] != b'/' {
                i += 1;
            }
            let mut el = Element {
                name: text[st..i].to_string(),
                ..Default::default()
            };
            let self_closing;
            loop {
                while (b[i] as char).is_whitespace() {
                    i += 1;
                }
                if b[i] == b'/' {
                    assert_eq!(b[i + 1], b'>');
                    i += 2;
                    self_closing = true;
                    break;
                }
                if b[i] == b'>' {
                    i += 1;
                    self_closing = false;
                    break;
                }
                let st = i;
                while b[i] != b'=' && !(b[i] as char).is_whitespace() {
                    i += 1;
                }
                let key = text[st..i].to_string();
                while b[i] != b'=' {
                    i += 1;
                }
                i += 1;
                while (b[i] as char).is_whitespace() {
                    i += 1;
                }
                let q = b[i];
                assert!(q == b'"' || q == b'\'', "unquoted attribute");
                i += 1;
                let st = i;
                while b[i] != q {
                    i += 1;
                }
                el.attrs.push((key, xml_unescape(&text[st..i])));
                i += 1;
            }
            if self_closing {
                stack.last_mut().unwrap().children.push(el);
            } else {
                stack.push(el);
            }
        }
    }
    assert_eq!(stack.len(), 1, "unclosed XML elements");
    stack.pop().unwrap()
}

// ---------------------------------------------------------------------------
// Kernel source
// ---------------------------------------------------------------------------

pub struct Sources {
    pub root: PathBuf,
}

impl Sources {
    /// `SEL4_SOURCE`, else `$CARGO_HOME/registry/src/*/sel4-sys-0.0.28/seL4`
    /// (`CARGO_HOME` defaulting to `~/.cargo`).
    pub fn locate(env_source: Option<String>) -> Result<Sources, String> {
        if let Some(s) = env_source {
            let root = PathBuf::from(s);
            if root.join("include/api/syscall.xml").exists() {
                return Ok(Sources { root });
            }
            return Err(format!(
                "SEL4_SOURCE={} does not look like a seL4 source tree",
                root.display()
            ));
        }
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .ok_or("neither SEL4_SOURCE, CARGO_HOME nor HOME is set")?;
        let reg = home.join("registry/src");
        let mut found = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&reg) {
            for e in rd.flatten() {
                let p = e.path().join("sel4-sys-0.0.28/seL4");
                if p.join("include/api/syscall.xml").exists() {
                    found.push(p);
                }
            }
        }
        found.sort();
        found.pop().map(|root| Sources { root }).ok_or_else(|| {
            format!(
                "seL4 source not found: set SEL4_SOURCE, or fetch the crates.io package sel4-sys 0.0.28 (looked in {})",
                reg.display()
            )
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn read(&self, rel: &str) -> String {
        let p = self.path(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    pub const SYSCALL_XML: &'static str = "include/api/syscall.xml";
    /// In label order: generic, then sel4_arch (aarch64), then arch (arm).
    pub const INTERFACE_XML: [&'static str; 3] = [
        "libsel4/include/interfaces/sel4.xml",
        "libsel4/sel4_arch_include/aarch64/interfaces/sel4arch.xml",
        "libsel4/arch_include/arm/interfaces/sel4arch.xml",
    ];
    /// In numbering order: api, sel4_arch (mode), arch.
    pub const OBJECTTYPE_H: [&'static str; 3] = [
        "libsel4/include/sel4/objecttype.h",
        "libsel4/sel4_arch_include/aarch64/sel4/sel4_arch/objecttype.h",
        "libsel4/arch_include/arm/sel4/arch/objecttype.h",
    ];
    pub const ERRORS_H: &'static str = "libsel4/include/sel4/errors.h";

    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path(Self::SYSCALL_XML), self.path(Self::ERRORS_H)];
        v.extend(Self::INTERFACE_XML.iter().map(|p| self.path(p)));
        v.extend(Self::OBJECTTYPE_H.iter().map(|p| self.path(p)));
        v
    }
}

// ---------------------------------------------------------------------------
// Syscalls
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub struct Syscall {
    pub name: String,
    pub number: i64,
    pub condition: String,
    pub enabled: bool,
}

/// Syscall numbers as `syscall_header_gen.py` assigns them: `api` then `debug`
/// syscalls, -1 downwards in file order. The counter runs over disabled
/// syscalls too (it lives in the template, outside the `#if`), so numbers do
/// not depend on the configuration; `enabled` says whether the kernel has it.
pub fn syscalls(xml: &str, cfg: &Config) -> Vec<Syscall> {
    let doc = parse_xml(xml);
    let mut out = Vec::new();
    let mut n = -1;
    for section in ["api", "debug"] {
        for sec in doc.all(section) {
            for config in sec.all("config") {
                let cond = config.attr("condition").unwrap_or("").to_string();
                let enabled = cfg.eval(&cond);
                for sc in config.all("syscall") {
                    out.push(Syscall {
                        name: sc.attr("name").expect("syscall without name").to_string(),
                        number: n,
                        condition: cond.clone(),
                        enabled,
                    });
                    n -= 1;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Interfaces, methods, invocation labels
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: String,
}

#[derive(Clone, Debug)]
pub struct Method {
    pub interface: String,
    pub name: String,
    pub id: String,
    pub condition: String,
    pub inputs: Vec<Param>,
    pub outputs: Vec<Param>,
    /// Which interface file (0 generic, 1 sel4_arch, 2 arch).
    pub layer: usize,
}

#[derive(Clone, Debug)]
pub struct Struct {
    pub name: String,
    pub members: Vec<String>,
}

pub fn parse_interfaces(xmls: &[String]) -> (Vec<Method>, Vec<Struct>) {
    let mut methods = Vec::new();
    let mut structs = Vec::new();
    for (layer, text) in xmls.iter().enumerate() {
        let doc = parse_xml(text);
        for s in doc.all("struct") {
            structs.push(Struct {
                name: s.attr("name").unwrap().to_string(),
                members: s
                    .all("member")
                    .iter()
                    .map(|m| m.attr("name").unwrap().to_string())
                    .collect(),
            });
        }
        for iface in doc.all("interface") {
            let iname = iface.attr("name").unwrap().to_string();
            for m in iface.all("method") {
                let mut inputs = Vec::new();
                let mut outputs = Vec::new();
                for p in m.all("param") {
                    let param = Param {
                        name: p.attr("name").unwrap().to_string(),
                        ty: p.attr("type").unwrap().to_string(),
                    };
                    match p.attr("dir") {
                        Some("in") => inputs.push(param),
                        Some("out") => outputs.push(param),
                        d => panic!("bad param dir {d:?}"),
                    }
                }
                methods.push(Method {
                    interface: iname.clone(),
                    name: m.attr("name").unwrap().to_string(),
                    id: m.attr("id").unwrap().to_string(),
                    condition: m.attr("condition").unwrap_or("").to_string(),
                    inputs,
                    outputs,
                    layer,
                });
            }
        }
    }
    (methods, structs)
}

/// Invocation labels as the kernel numbers them (`invocation_header_gen.py`):
/// `InvalidInvocation` = 0, then the generic methods, then the aarch64
/// (sel4_arch) ones, then the arm (arch) ones, each a C enum continuing the
/// previous one; methods whose condition is false are left out. Returns
/// (label, value) pairs and the three counts `nInvocationLabels`,
/// `nSeL4ArchInvocationLabels`, `nArchInvocationLabels`.
pub fn invocation_labels(methods: &[Method], cfg: &Config) -> (Vec<(String, u64)>, [u64; 3]) {
    let mut out = vec![("InvalidInvocation".to_string(), 0u64)];
    let mut next = 1u64;
    let mut counts = [0u64; 3];
    // Python's order: every method element of each file in document order.
    for (layer, count) in counts.iter_mut().enumerate() {
        for m in methods.iter().filter(|m| m.layer == layer) {
            if cfg.eval(&m.condition) {
                out.push((m.id.clone(), next));
                next += 1;
            }
        }
        *count = next;
    }
    (out, counts)
}

// ---------------------------------------------------------------------------
// C enums (object types, errors)
// ---------------------------------------------------------------------------

/// Enumerators of every `enum { ... }` in a C header, after preprocessing with
/// `cfg`. `known` resolves enumerators defined by earlier headers (e.g.
/// `seL4_ModeObjectTypeCount`) and receives the new ones.
pub fn c_enums(text: &str, cfg: &Config, known: &mut BTreeMap<String, i64>) -> Vec<(String, i64)> {
    let mut local = cfg.clone();
    let src = preprocess(text, &mut local);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(p) = rest.find("enum") {
        let after = &rest[p + 4..];
        // `enum` must be a whole word.
        let before_ok = p == 0
            || !rest.as_bytes()[p - 1].is_ascii_alphanumeric() && rest.as_bytes()[p - 1] != b'_';
        let after_ok = after.starts_with(|c: char| c.is_whitespace() || c == '{');
        let (Some(open), true) = (after.find('{'), before_ok && after_ok) else {
            rest = after;
            continue;
        };
        // Only `enum [name] {`.
        if after[..open]
            .trim()
            .contains(|c: char| !(c.is_alphanumeric() || c == '_'))
        {
            rest = after;
            continue;
        }
        let close = after[open..].find('}').expect("unterminated enum") + open;
        let mut value: i64 = -1;
        for item in after[open + 1..close].split(',') {
            let item = item.trim();
            if item.is_empty() || item.contains('(') {
                continue; // SEL4_FORCE_LONG_ENUM(...)
            }
            let (name, v) = match item.split_once('=') {
                Some((n, v)) => {
                    let v = v.trim();
                    let val = parse_c_int(v)
                        .or_else(|| known.get(v).copied())
                        .or_else(|| local.int(v))
                        .unwrap_or_else(|| panic!("cannot resolve enum value {v:?}"));
                    (n.trim(), val)
                }
                None => (item, value + 1),
            };
            value = v;
            known.insert(name.to_string(), v);
            out.push((name.to_string(), v));
        }
        rest = &after[close..];
    }
    out
}

/// Object type numbers: `seL4_ObjectType` (api) continued by the aarch64 mode
/// types and then the arm arch types, as the C enums chain them.
pub fn object_types(headers: &[String; 3], cfg: &Config) -> Vec<(String, i64)> {
    let mut known = BTreeMap::new();
    let mut out = Vec::new();
    for h in headers {
        out.extend(c_enums(h, cfg, &mut known));
    }
    out
}

// ---------------------------------------------------------------------------
// Stub marshalling (syscall_stub_gen.py's rules)
// ---------------------------------------------------------------------------

pub const WORD_BITS: u32 = 64;
/// Message registers passed in CPU registers on aarch64 (x2..x5).
pub const NUM_MRS: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A capability: passed as an extra cap (the first one is the service cap).
    Cap,
    /// A plain value of `bits` bits (bitfield structs are one word).
    Value { bits: u32 },
    /// A multi-word structure passed by reference (`seL4_UserContext`).
    Struct { words: u32 },
}

/// Sizes and kinds of the types `syscall_stub_gen.py` knows for aarch64.
pub fn type_kind(ty: &str, structs: &[Struct]) -> Kind {
    match ty {
        "int" | "seL4_Uint32" => Kind::Value { bits: 32 },
        "long" | "seL4_Word" | "seL4_Uint64" => Kind::Value { bits: 64 },
        "seL4_Uint8" => Kind::Value { bits: 8 },
        "seL4_Uint16" => Kind::Value { bits: 16 },
        "seL4_Bool" => Kind::Value { bits: 1 },
        "seL4_CapData_t" | "seL4_PrioProps_t" | "seL4_CapRights_t" | "seL4_ARM_VMAttributes" => {
            Kind::Value { bits: 64 }
        }
        "seL4_CPtr"
        | "seL4_CNode"
        | "seL4_IRQHandler"
        | "seL4_IRQControl"
        | "seL4_TCB"
        | "seL4_Untyped"
        | "seL4_DomainSet"
        | "seL4_ARM_Page"
        | "seL4_ARM_PageTable"
        | "seL4_ARM_PageDirectory"
        | "seL4_ARM_PageUpperDirectory"
        | "seL4_ARM_PageGlobalDirectory"
        | "seL4_ARM_ASIDControl"
        | "seL4_ARM_ASIDPool"
        | "seL4_ARM_IOSpace"
        | "seL4_ARM_IOPageTable" => Kind::Cap,
        _ => match structs.iter().find(|s| s.name == ty) {
            Some(s) => Kind::Struct {
                words: s.members.len() as u32,
            },
            None => panic!("unknown type {ty} in the interface XML"),
        },
    }
}

fn kind_bits(k: &Kind) -> u32 {
    match k {
        Kind::Cap => WORD_BITS,
        Kind::Value { bits } => *bits,
        Kind::Struct { words } => words * WORD_BITS,
    }
}

/// Bit position of each non-cap parameter in the message:
/// `get_parameter_positions` (align each to min(its size, a word)).
pub fn positions(params: &[(String, Kind)]) -> Vec<(u32, u32)> {
    let mut used = 0u32;
    let mut out = Vec::new();
    for (_, k) in params {
        let size = kind_bits(k);
        assert!(size.is_power_of_two() || size % WORD_BITS == 0);
        let a = size.min(WORD_BITS);
        used = used.div_ceil(a) * a;
        out.push((used, size));
        used += size;
    }
    out
}

/// Where a method's arguments go: caps in extra-cap order, and for each
/// non-cap input its (word, bit offset, bits).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub caps: Vec<String>,
    pub words: Vec<(String, u32, u32, u32)>,
    pub length: usize,
    pub outputs: Vec<(String, u32, u32, u32)>,
}

pub fn layout(m: &Method, structs: &[Struct]) -> Layout {
    let mut caps = Vec::new();
    let mut std_params = Vec::new();
    for p in &m.inputs {
        match type_kind(&p.ty, structs) {
            Kind::Cap => caps.push(p.name.clone()),
            k => std_params.push((p.name.clone(), k)),
        }
    }
    let place = |ps: &[(String, Kind)]| -> Vec<(String, u32, u32, u32)> {
        positions(ps)
            .into_iter()
            .zip(ps)
            .map(|((first, bits), (n, _))| (n.clone(), first / WORD_BITS, first % WORD_BITS, bits))
            .collect()
    };
    let words = place(&std_params);
    // Length = number of words that receive at least one expression.
    let mut used = std::collections::BTreeSet::new();
    for (_, w, _, bits) in &words {
        for i in 0..bits.div_ceil(WORD_BITS).max(1) {
            used.insert(w + i);
        }
    }
    let outs: Vec<(String, Kind)> = m
        .outputs
        .iter()
        .map(|p| (p.name.clone(), type_kind(&p.ty, structs)))
        .collect();
    Layout {
        caps,
        words,
        length: used.len(),
        outputs: place(&outs),
    }
}

// ---------------------------------------------------------------------------
// Rust rendering
// ---------------------------------------------------------------------------

/// `seL4_ARM_PageTable` -> `PageTable`, `seL4_TCB` -> `TCB`.
pub fn rust_cap_type(c: &str) -> String {
    let s = c.strip_prefix("seL4_").unwrap_or(c);
    let s = s.strip_prefix("ARM_").unwrap_or(s);
    s.replace('_', "")
}

/// `SetIPCBuffer` -> `set_ipc_buffer`, `Clean_Data` -> `clean_data`.
pub fn snake_case(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in cs.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(cs[i - 1]) } else { None };
            let next = cs.get(i + 1).copied();
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn rust_ident(name: &str) -> String {
    let s = snake_case(name);
    match s.as_str() {
        "type" | "ref" | "move" | "self" | "fn" | "in" | "loop" | "match" | "mod" | "use"
        | "impl" => format!("{s}_"),
        _ => s,
    }
}

/// Rust type of a parameter, and how to turn it into a word (`{}` = the value).
/// A few parameters declared as plain words get a stronger type: the object
/// type of `Untyped_Retype` and fault endpoint CPtrs.
fn rust_param_type(m: &Method, p: &Param) -> (String, &'static str) {
    if m.interface == "seL4_Untyped" && m.name == "Retype" && p.name == "type" {
        return ("ObjectType".into(), "{} as Word");
    }
    if p.name == "fault_ep" && p.ty == "seL4_Word" {
        return ("CPtr".into(), "{}.0");
    }
    match p.ty.as_str() {
        "int" => ("i32".into(), "{} as u32 as Word"),
        "seL4_Word" | "long" => ("Word".into(), "{}"),
        "seL4_Uint64" => ("u64".into(), "{}"),
        "seL4_Uint32" => ("u32".into(), "{} as Word"),
        "seL4_Uint16" => ("u16".into(), "{} as Word"),
        "seL4_Uint8" => ("u8".into(), "{} as Word"),
        "seL4_Bool" => ("bool".into(), "{} as Word"),
        "seL4_CapData_t" => ("CapData".into(), "{}.0"),
        "seL4_PrioProps_t" => ("PrioProps".into(), "{}.0"),
        "seL4_CapRights_t" => ("CapRights".into(), "{}.0"),
        "seL4_ARM_VMAttributes" => ("VMAttributes".into(), "{}.0"),
        "seL4_CPtr" => ("CPtr".into(), "{}"),
        t if t.starts_with("seL4_") && !t.ends_with("_t") && t != "seL4_UserContext" => {
            (rust_cap_type(t), "{}")
        }
        "seL4_UserContext" => ("UserContext".into(), "{}"),
        t => panic!("no Rust type for {t}"),
    }
}

fn rust_out_type(p: &Param) -> (String, &'static str) {
    match p.ty.as_str() {
        "seL4_Word" | "seL4_Uint64" => ("Word".into(), "{}"),
        "seL4_Uint32" | "int" => ("u32".into(), "{} as u32"),
        "seL4_Uint16" => ("u16".into(), "{} as u16"),
        "seL4_Uint8" => ("u8".into(), "{} as u8"),
        "seL4_Bool" => ("bool".into(), "{} != 0"),
        t => panic!("no Rust output type for {t}"),
    }
}

/// Every type name used for capabilities in the interfaces (for the wrapper
/// types the crate defines).
pub fn cap_types_used(methods: &[Method], structs: &[Struct]) -> Vec<String> {
    let mut v: Vec<String> = methods
        .iter()
        .flat_map(|m| {
            std::iter::once(m.interface.clone()).chain(m.inputs.iter().map(|p| p.ty.clone()))
        })
        .filter(|t| type_kind(t, structs) == Kind::Cap && t != "seL4_CPtr")
        .map(|t| rust_cap_type(&t))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The generated invocation methods: `impl <CapType> { pub fn <method>(...) }`.
pub fn render_invocations(methods: &[Method], structs: &[Struct], cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by sel4-abi build.rs from the kernel's interface XML. Do not edit.\n"
    );
    for m in methods {
        if !cfg.eval(&m.condition) {
            continue;
        }
        let lay = layout(m, structs);
        let ty = rust_cap_type(&m.interface);
        let fname = rust_ident(&m.name);
        let mut args = Vec::new();
        let mut word_exprs: Vec<Vec<String>> = vec![Vec::new(); lay.length];
        let mut cap_exprs = Vec::new();
        let by_name = |n: &str| m.inputs.iter().find(|p| p.name == n).unwrap();
        for p in &m.inputs {
            let (rt, _) = rust_param_type(m, p);
            let an = rust_ident(&p.name);
            if p.ty == "seL4_CPtr" {
                // Any capability type converts: `page.map(vspace, ...)`.
                args.push(format!("{an}: impl Into<CPtr>"));
            } else if let Kind::Struct { .. } = type_kind(&p.ty, structs) {
                args.push(format!("{an}: &{rt}"));
            } else {
                args.push(format!("{an}: {rt}"));
            }
        }
        for c in &lay.caps {
            let p = by_name(c);
            let an = rust_ident(&p.name);
            if p.ty == "seL4_CPtr" {
                cap_exprs.push(format!("{an}.into()"));
            } else {
                cap_exprs.push(format!("{an}.cptr()"));
            }
        }
        for (n, w, off, bits) in &lay.words {
            let p = by_name(n);
            let an = rust_ident(&p.name);
            if let Kind::Struct { words } = type_kind(&p.ty, structs) {
                let st = structs.iter().find(|st| st.name == p.ty).unwrap();
                assert_eq!(*off, 0);
                for i in 0..words {
                    word_exprs[(*w + i) as usize].push(format!("{an}.{}", st.members[i as usize]));
                }
                continue;
            }
            let (_, conv) = rust_param_type(m, p);
            let mut e = conv.replace("{}", &an);
            if *bits < WORD_BITS {
                e = format!("(({e}) & {:#x})", (1u64 << bits) - 1);
            }
            if *off > 0 {
                e = format!("({e} << {off})");
            }
            word_exprs[*w as usize].push(e);
        }
        // Outputs passed by reference (structs) are extra `&mut` arguments.
        let mut ret_types = Vec::new();
        let mut ret_exprs = Vec::new();
        let mut out_words = 0u32;
        let mut ref_outs = Vec::new();
        for (n, w, off, bits) in &lay.outputs {
            let p = m.outputs.iter().find(|p| &p.name == n).unwrap();
            let an = rust_ident(&p.name);
            out_words = out_words.max(w + bits.div_ceil(WORD_BITS));
            if let Kind::Struct { words } = type_kind(&p.ty, structs) {
                let st = structs.iter().find(|st| st.name == p.ty).unwrap();
                args.push(format!("{an}: &mut UserContext"));
                for i in 0..words {
                    ref_outs.push(format!("{an}.{} = out[{}];", st.members[i as usize], w + i));
                }
                continue;
            }
            let (rt, conv) = rust_out_type(p);
            let mut e = format!("out[{w}]");
            if *off > 0 {
                e = format!("({e} >> {off})");
            }
            if *bits < WORD_BITS {
                e = format!("({e} & {:#x})", (1u64 << bits) - 1);
            }
            ret_types.push(rt);
            ret_exprs.push(conv.replace("{}", &e));
        }
        let (ret_ty, ret_val) = match ret_types.len() {
            0 => ("()".to_string(), "()".to_string()),
            1 => (ret_types[0].clone(), ret_exprs[0].clone()),
            _ => (
                format!("({})", ret_types.join(", ")),
                format!("({})", ret_exprs.join(", ")),
            ),
        };
        // Doc comment.
        let _ = writeln!(s, "impl {ty} {{");
        let _ = writeln!(
            s,
            "    /// `{}_{}` (label [`InvocationLabel::{}`]).",
            m.interface, m.name, m.id
        );
        let _ = writeln!(s, "    ///");
        let _ = writeln!(
            s,
            "    /// Message: {} word(s){}{}.",
            lay.length,
            if lay.caps.is_empty() {
                String::new()
            } else {
                format!("; extra caps: {}", lay.caps.join(", "))
            },
            if lay.outputs.is_empty() {
                String::new()
            } else {
                format!(
                    "; returns: {}",
                    m.outputs
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
        if !m.condition.is_empty() {
            let _ = writeln!(
                s,
                "    /// Only in kernels configured with `{}`.",
                m.condition
            );
        }
        let _ = writeln!(s, "    #[inline]");
        let _ = writeln!(
            s,
            "    pub fn {fname}(self{}{}) -> Result<{ret_ty}, Error> {{",
            if args.is_empty() { "" } else { ", " },
            args.join(", ")
        );
        let words: Vec<String> = word_exprs
            .iter()
            .map(|e| {
                if e.is_empty() {
                    "0".to_string()
                } else {
                    e.join(" | ")
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "        let mrs: [Word; {}] = [{}];",
            lay.length,
            words.join(", ")
        );
        let _ = writeln!(
            s,
            "        let caps: [CPtr; {}] = [{}];",
            cap_exprs.len(),
            cap_exprs.join(", ")
        );
        let out_binding = if out_words == 0 { "_out" } else { "out" };
        let _ = writeln!(s, "        let {out_binding} = invoke::<{out_words}>(self.cptr(), InvocationLabel::{}, &caps, &mrs)?;", m.id);
        for r in &ref_outs {
            let _ = writeln!(s, "        {r}");
        }
        let _ = writeln!(s, "        Ok({ret_val})");
        let _ = writeln!(s, "    }}");
        let _ = writeln!(s, "}}\n");
    }
    s
}

pub fn render_labels(labels: &[(String, u64)], counts: [u64; 3]) -> String {
    let mut s = String::from(
        "// Generated by sel4-abi build.rs from the kernel's interface XML. Do not edit.\n\n",
    );
    s.push_str("/// Invocation labels of this kernel configuration (the message label of an\n");
    s.push_str("/// invocation; names are the XML method ids).\n");
    s.push_str("#[repr(u64)]\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum InvocationLabel {\n");
    for (n, v) in labels {
        let _ = writeln!(s, "    {n} = {v},");
    }
    s.push_str("}\n\n");
    let _ = writeln!(s, "/// `nInvocationLabels`: first label after the generic ones.\npub const N_INVOCATION_LABELS: u64 = {};", counts[0]);
    let _ = writeln!(
        s,
        "/// `nSeL4ArchInvocationLabels`.\npub const N_SEL4_ARCH_INVOCATION_LABELS: u64 = {};",
        counts[1]
    );
    let _ = writeln!(
        s,
        "/// `nArchInvocationLabels`.\npub const N_ARCH_INVOCATION_LABELS: u64 = {};",
        counts[2]
    );
    s.push_str("\n/// Every label with its name, in numeric order.\npub const ALL_INVOCATION_LABELS: &[(&str, u64)] = &[\n");
    for (n, v) in labels {
        let _ = writeln!(s, "    ({n:?}, {v}),");
    }
    s.push_str("];\n");
    s
}

pub fn render_syscalls(sys: &[Syscall]) -> String {
    let mut s = String::from(
        "// Generated by sel4-abi build.rs from include/api/syscall.xml. Do not edit.\n\n",
    );
    s.push_str("/// Syscall numbers (`x7`) of the syscalls this kernel configuration has.\n");
    s.push_str(
        "#[repr(i64)]\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Syscall {\n",
    );
    for sc in sys.iter().filter(|s| s.enabled) {
        let _ = writeln!(s, "    {} = {},", sc.name, sc.number);
    }
    s.push_str(
        "}\n\n/// Every syscall of the XML: (name, number, enabled in this configuration).\n",
    );
    s.push_str("pub const ALL_SYSCALLS: &[(&str, i64, bool)] = &[\n");
    for sc in sys {
        let _ = writeln!(s, "    ({:?}, {}, {}),", sc.name, sc.number, sc.enabled);
    }
    s.push_str("];\n");
    s
}

pub fn render_object_types(types: &[(String, i64)]) -> String {
    let mut s = String::from(
        "// Generated by sel4-abi build.rs from libsel4's objecttype.h files. Do not edit.\n\n",
    );
    s.push_str("/// Object types for `Untyped::retype` in this kernel configuration (names are\n");
    s.push_str("/// libsel4's without the `seL4_` prefix).\n");
    s.push_str(
        "#[repr(u64)]\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum ObjectType {\n",
    );
    let mut counts = Vec::new();
    for (n, v) in types {
        let n = n.strip_prefix("seL4_").unwrap_or(n);
        if n.ends_with("Count") {
            counts.push((n.to_string(), *v));
        } else {
            let _ = writeln!(s, "    {n} = {v},");
        }
    }
    s.push_str("}\n\n");
    for (n, v) in counts {
        let _ = writeln!(
            s,
            "/// `seL4_{n}`.\npub const {}: u64 = {v};",
            snake_case(&n).to_ascii_uppercase()
        );
    }
    s
}

pub fn render_errors(errs: &[(String, i64)]) -> String {
    let mut s = String::from(
        "// Generated by sel4-abi build.rs from libsel4/include/sel4/errors.h. Do not edit.\n\n",
    );
    s.push_str("/// An invocation's error: the label of the kernel's reply (`seL4_Error`).\n");
    s.push_str("/// `Unknown` stands for a label outside the kernel's range (never expected).\n");
    s.push_str(
        "#[repr(u64)]\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Error {\n",
    );
    let mut arms = String::new();
    for (n, v) in errs {
        let n = n.strip_prefix("seL4_").unwrap_or(n);
        if n == "NoError" || n == "NumErrors" {
            continue;
        }
        let _ = writeln!(s, "    {n} = {v},");
        let _ = writeln!(arms, "            {v} => Some(Error::{n}),");
    }
    s.push_str("    Unknown = u64::MAX,\n}\n\nimpl Error {\n");
    s.push_str("    /// The error a reply label stands for; `None` for `seL4_NoError` (0).\n");
    s.push_str("    pub const fn from_label(label: u64) -> Option<Error> {\n        match label {\n            0 => None,\n");
    s.push_str(&arms);
    s.push_str("            _ => Some(Error::Unknown),\n        }\n    }\n}\n");
    s
}

/// Configuration constants: every define with an integer value, `CONFIG_`
/// stripped (`config::MAX_NUM_BOOTINFO_UNTYPED_CAPS`).
pub fn render_config(cfg: &Config) -> String {
    let mut s = String::from(
        "// Generated by sel4-abi build.rs from the kernel configuration. Do not edit.\n\n",
    );
    for (k, v) in &cfg.defines {
        let Some(name) = k.strip_prefix("CONFIG_") else {
            continue;
        };
        if let Some(n) = parse_c_int(v) {
            if n >= 0 {
                let _ = writeln!(s, "/// `{k}`\npub const {name}: u64 = {n};");
            }
        }
    }
    s.push_str("\n/// Every define of the configuration: (name, value).\npub const DEFINES: &[(&str, &str)] = &[\n");
    for (k, v) in &cfg.defines {
        let _ = writeln!(s, "    ({k:?}, {v:?}),");
    }
    s.push_str("];\n");
    s
}

/// Markdown table of every method: which Rust method, label, message layout.
pub fn render_invocations_doc(methods: &[Method], structs: &[Struct], cfg: &Config) -> String {
    let mut s = String::from(
        "Generated from the kernel's interface XML for this configuration \\
",
    );
    s.push_str("(`caps`: extra caps in order; `words`: message words; methods whose XML condition is false are not generated).\n\n");
    s.push_str("| libsel4 | Rust | label | caps | words | returns |\n|---|---|---|---|---|---|\n");
    let (labels, _) = invocation_labels(methods, cfg);
    for m in methods {
        let enabled = cfg.eval(&m.condition);
        let lay = layout(m, structs);
        let label = labels
            .iter()
            .find(|(n, _)| n == &m.id)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| "—".into());
        let rust = if enabled {
            format!("`{}::{}`", rust_cap_type(&m.interface), rust_ident(&m.name))
        } else {
            format!("not generated (`{}`)", m.condition)
        };
        let _ = writeln!(
            s,
            "| `{}_{}` | {} | {} | {} | {} | {} |",
            m.interface,
            m.name,
            rust,
            label,
            if lay.caps.is_empty() {
                "—".to_string()
            } else {
                lay.caps.join(", ")
            },
            lay.length,
            if m.outputs.is_empty() {
                "—".to_string()
            } else {
                m.outputs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
    }
    s
}

/// The XML's structures (`seL4_UserContext`) as `#[repr(C)]` Rust structs
/// with the members in the XML's order (the order the stubs marshal them).
pub fn render_structs(structs: &[Struct]) -> String {
    let mut s =
        String::from("// Generated by sel4-abi build.rs from the interface XML. Do not edit.\n\n");
    for st in structs {
        let name = rust_cap_type(&st.name);
        let _ = writeln!(
            s,
            "/// `{}`: members in the order of the interface XML (the order in which",
            st.name
        );
        let _ = writeln!(
            s,
            "/// `TCB::write_registers`/`read_registers` transfer them)."
        );
        s.push_str("#[repr(C)]\n#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]\n");
        let _ = writeln!(s, "pub struct {name} {{");
        for m in &st.members {
            let _ = writeln!(s, "    pub {m}: Word,");
        }
        s.push_str("}\n\n");
        let _ = writeln!(s, "impl {name} {{\n    /// Number of words (`count` for all registers).\n    pub const WORDS: usize = {};\n}}\n", st.members.len());
    }
    s
}

/// Everything the crate includes, keyed by file name in `OUT_DIR`.
pub struct Generated {
    pub files: Vec<(&'static str, String)>,
    pub cfg: Config,
    pub methods: Vec<Method>,
    pub structs: Vec<Struct>,
}

pub fn generate(src: &Sources, cfg: &Config) -> Generated {
    let sys = syscalls(&src.read(Sources::SYSCALL_XML), cfg);
    let xmls: Vec<String> = Sources::INTERFACE_XML.iter().map(|p| src.read(p)).collect();
    let (methods, structs) = parse_interfaces(&xmls);
    let (labels, counts) = invocation_labels(&methods, cfg);
    let objs = object_types(&Sources::OBJECTTYPE_H.map(|p| src.read(p)), cfg);
    let errs = c_enums(&src.read(Sources::ERRORS_H), cfg, &mut BTreeMap::new());
    let files = vec![
        ("syscalls.rs", render_syscalls(&sys)),
        ("invocation_labels.rs", render_labels(&labels, counts)),
        ("object_types.rs", render_object_types(&objs)),
        ("errors.rs", render_errors(&errs)),
        ("config.rs", render_config(cfg)),
        (
            "invocations.rs",
            render_invocations(&methods, &structs, cfg),
        ),
        ("structs.rs", render_structs(&structs)),
        (
            "invocations.md",
            render_invocations_doc(&methods, &structs, cfg),
        ),
        ("config_defines.h", cfg.to_c_header()),
    ];
    Generated {
        files,
        cfg: cfg.clone(),
        methods,
        structs,
    }
}

/// Resolve the configuration from `SEL4_AUTOCONF` / `SEL4_DEFINES` values.
pub fn resolve_config(autoconf: Option<&Path>, defines: Option<&str>) -> Result<Config, String> {
    let mut cfg = match autoconf {
        None => Config::default_virt(),
        Some(p) => {
            let mut c = Config::default();
            if let Some(d) = defines {
                c.add_command_line(d);
            }
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("SEL4_AUTOCONF={}: {e}", p.display()))?;
            c.add_autoconf(&text);
            return Ok(c);
        }
    };
    if let Some(d) = defines {
        cfg.add_command_line(d);
    }
    Ok(cfg)
}
