//! Expressions for derived features (`[[features]] expr = "TotalCharges / (tenure + 1)"`).
//!
//! A small, total language over one row: numbers, column references (bare names,
//! or `` `quoted names` `` for names with spaces), `+ - * /`, comparisons
//! (`< <= > >= == !=`, giving 1 or 0; strings may be compared with `==`/`!=`),
//! `and`/`or`/`not`, and the functions `log1p`, `log`, `exp`, `sqrt`, `abs`,
//! `min`, `max`, `clip(x, lo, hi)`, `bucketize(x, [e1, e2, ...])` (index of the
//! bucket with explicit edges: `x < e1` → 0, `e1 <= x < e2` → 1, ...),
//! `is_null(x)` and `coalesce(x, y)`. A null input, a division by zero or a
//! domain error yields null (NaN); the feature's imputation then applies. Errors
//! name the position in the expression.

use std::fmt;

use crate::schema::ColumnType;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at character {position}: {message}")]
pub struct ExprError {
    /// 1-based character position in the expression.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// A value while evaluating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A number (NaN is null).
    Num(f64),
    /// Text.
    Str(&'a str),
    /// Missing.
    Null,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(f64),
    Str(String),
    Col(usize),
    Neg(Box<Node>),
    Not(Box<Node>),
    Bin(Op, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
    Bucketize(Box<Node>, Vec<f64>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Log1p,
    Log,
    Exp,
    Sqrt,
    Abs,
    Min,
    Max,
    Clip,
    IsNull,
    Coalesce,
}

impl Func {
    fn by_name(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "log1p" => (Func::Log1p, 1),
            "log" => (Func::Log, 1),
            "exp" => (Func::Exp, 1),
            "sqrt" => (Func::Sqrt, 1),
            "abs" => (Func::Abs, 1),
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            "clip" => (Func::Clip, 3),
            "is_null" => (Func::IsNull, 1),
            "coalesce" => (Func::Coalesce, 2),
            _ => return None,
        })
    }
}

/// Longest expression accepted, in characters.
pub const MAX_EXPR_CHARS: usize = 4_096;

/// Deepest nesting accepted: parentheses, function calls, unary operators and
/// chains of binary operators all count. Parsing, checking, evaluating and
/// dropping an expression recurse over its tree, so the bound keeps every one
/// of them far from the stack's end whatever a spec holds.
pub const MAX_EXPR_DEPTH: usize = 64;

const FUNCTIONS: &str = "log1p, log, exp, sqrt, abs, min, max, clip, bucketize, is_null, coalesce";

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    source: String,
    root: Node,
    columns: Vec<String>,
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Quoted(String),
    Str(String),
    Sym(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |p: usize, m: String| ExprError {
        position: p + 1,
        message: m,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let v = text
                .parse::<f64>()
                .map_err(|_| err(start, format!("{text:?} is not a number")))?;
            out.push((start, Tok::Num(v)));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            continue;
        }
        if c == '`' || c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i == chars.len() {
                return Err(err(start, format!("unclosed {c}")));
            }
            let text: String = chars[start + 1..i].iter().collect();
            i += 1;
            out.push((
                start,
                if c == '`' {
                    Tok::Quoted(text)
                } else {
                    Tok::Str(text)
                },
            ));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = match two.as_str() {
            "<=" => Some("<="),
            ">=" => Some(">="),
            "==" => Some("=="),
            "!=" => Some("!="),
            _ => None,
        };
        if let Some(s) = sym {
            out.push((start, Tok::Sym(s)));
            i += 2;
            continue;
        }
        let sym = match c {
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '<' => "<",
            '>' => ">",
            other => return Err(err(start, format!("unexpected character {other:?}"))),
        };
        out.push((start, Tok::Sym(sym)));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    columns: Vec<String>,
    /// Current nesting of the recursive descent.
    depth: usize,
}

impl Parser {
    fn pos(&self) -> usize {
        self.toks
            .get(self.at)
            .map(|t| t.0 + 1)
            .unwrap_or(self.end + 1)
    }
    fn err(&self, m: impl Into<String>) -> ExprError {
        ExprError {
            position: self.pos(),
            message: m.into(),
        }
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.1)
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, s: &str) -> Result<(), ExprError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.err(format!("expected `{s}`")))
        }
    }
    fn column(&mut self, name: String) -> Node {
        let i = match self.columns.iter().position(|c| *c == name) {
            Some(i) => i,
            None => {
                self.columns.push(name);
                self.columns.len() - 1
            }
        };
        Node::Col(i)
    }

    /// Enters one level of nesting, refusing to go deeper than [`MAX_EXPR_DEPTH`].
    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return Err(self.err(format!(
                "expression nested more than {MAX_EXPR_DEPTH} levels deep"
            )));
        }
        Ok(())
    }

    /// A sub-expression one level deeper (in parentheses or an argument list).
    fn nested(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let n = self.or();
        self.depth -= 1;
        n
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut l = self.and()?;
        while self.eat_word("or") {
            let r = self.and()?;
            l = Node::Bin(Op::Or, Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Node, ExprError> {
        let mut l = self.not()?;
        while self.eat_word("and") {
            let r = self.not()?;
            l = Node::Bin(Op::And, Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Node, ExprError> {
        if self.eat_word("not") {
            self.enter()?;
            let x = self.not();
            self.depth -= 1;
            return Ok(Node::Not(Box::new(x?)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Node, ExprError> {
        let l = self.sum()?;
        for (s, op) in [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if self.eat_sym(s) {
                let r = self.sum()?;
                return Ok(Node::Bin(op, Box::new(l), Box::new(r)));
            }
        }
        Ok(l)
    }
    fn sum(&mut self) -> Result<Node, ExprError> {
        let mut l = self.product()?;
        loop {
            let op = if self.eat_sym("+") {
                Op::Add
            } else if self.eat_sym("-") {
                Op::Sub
            } else {
                return Ok(l);
            };
            let r = self.product()?;
            l = Node::Bin(op, Box::new(l), Box::new(r));
        }
    }
    fn product(&mut self) -> Result<Node, ExprError> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                Op::Mul
            } else if self.eat_sym("/") {
                Op::Div
            } else {
                return Ok(l);
            };
            let r = self.unary()?;
            l = Node::Bin(op, Box::new(l), Box::new(r));
        }
    }
    fn unary(&mut self) -> Result<Node, ExprError> {
        if self.eat_sym("-") {
            self.enter()?;
            let x = self.unary();
            self.depth -= 1;
            return Ok(Node::Neg(Box::new(x?)));
        }
        self.primary()
    }
    fn number_list(&mut self) -> Result<Vec<f64>, ExprError> {
        self.expect("[")?;
        let mut v = Vec::new();
        loop {
            let neg = self.eat_sym("-");
            match self.peek() {
                Some(Tok::Num(x)) => {
                    v.push(if neg { -*x } else { *x });
                    self.at += 1;
                }
                _ => return Err(self.err("expected a number in the list of edges")),
            }
            if self.eat_sym("]") {
                break;
            }
            self.expect(",")?;
        }
        if v.windows(2).any(|w| w[0] >= w[1]) {
            return Err(self.err("bucketize edges must be strictly increasing"));
        }
        Ok(v)
    }
    fn primary(&mut self) -> Result<Node, ExprError> {
        let Some((_, tok)) = self.toks.get(self.at).cloned() else {
            return Err(self.err("unexpected end of expression"));
        };
        self.at += 1;
        match tok {
            Tok::Num(v) => Ok(Node::Num(v)),
            Tok::Str(s) => Ok(Node::Str(s)),
            Tok::Quoted(name) => Ok(self.column(name)),
            Tok::Sym("(") => {
                let e = self.nested()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(name) if self.eat_sym("(") => {
                if name == "bucketize" {
                    let x = self.nested()?;
                    self.expect(",")?;
                    let edges = self.number_list()?;
                    self.expect(")")?;
                    return Ok(Node::Bucketize(Box::new(x), edges));
                }
                self.at -= 1;
                let Some((f, arity)) = Func::by_name(&name) else {
                    self.at -= 1;
                    return Err(self.err(format!("unknown function `{name}` (known: {FUNCTIONS})")));
                };
                self.at += 1;
                let mut args = Vec::new();
                if !self.eat_sym(")") {
                    loop {
                        args.push(self.nested()?);
                        if self.eat_sym(")") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                if args.len() != arity {
                    return Err(self.err(format!(
                        "`{name}` takes {arity} argument(s), got {}",
                        args.len()
                    )));
                }
                Ok(Node::Call(f, args))
            }
            Tok::Ident(name) => Ok(self.column(name)),
            Tok::Sym(s) => {
                self.at -= 1;
                Err(self.err(format!("unexpected `{s}`")))
            }
        }
    }
}

/// Depth of a tree, measured with an explicit stack (no recursion).
fn tree_depth(root: &Node) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((n, d)) = stack.pop() {
        deepest = deepest.max(d);
        match n {
            Node::Num(_) | Node::Str(_) | Node::Col(_) => {}
            Node::Neg(x) | Node::Not(x) | Node::Bucketize(x, _) => stack.push((x, d + 1)),
            Node::Bin(_, l, r) => {
                stack.push((l, d + 1));
                stack.push((r, d + 1));
            }
            Node::Call(_, args) => stack.extend(args.iter().map(|a| (a, d + 1))),
        }
    }
    deepest
}

fn num(v: Value<'_>) -> f64 {
    match v {
        Value::Num(x) => x,
        _ => f64::NAN,
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { f64::NAN }
}

impl Expr {
    /// Parses an expression.
    pub fn parse(src: &str) -> Result<Self, ExprError> {
        let chars = src.chars().count();
        if chars > MAX_EXPR_CHARS {
            return Err(ExprError {
                position: MAX_EXPR_CHARS + 1,
                message: format!(
                    "expression is {chars} characters long; at most {MAX_EXPR_CHARS} are accepted"
                ),
            });
        }
        let toks = tokenize(src)?;
        let mut p = Parser {
            toks,
            at: 0,
            end: chars,
            columns: Vec::new(),
            depth: 0,
        };
        let root = p.or()?;
        if p.at < p.toks.len() {
            return Err(p.err("unexpected text after the end of the expression"));
        }
        // Chains of binary operators (`a + a + ... + a`) are built by loops, not
        // recursion: measure the tree without recursing before anything walks it.
        let depth = tree_depth(&root);
        if depth > MAX_EXPR_DEPTH {
            return Err(ExprError {
                position: 1,
                message: format!(
                    "expression nested {depth} levels deep (operator chains count); at most {MAX_EXPR_DEPTH} are accepted"
                ),
            });
        }
        Ok(Self {
            source: src.to_string(),
            root,
            columns: p.columns,
        })
    }

    /// Columns the expression reads, in order of first use; `eval`'s `get` is
    /// called with indices into this list.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Checks every column exists and is used with a fitting type: numbers (int,
    /// float, bool) in arithmetic, strings only compared with `==`/`!=`.
    pub fn check(&self, type_of: &dyn Fn(&str) -> Option<ColumnType>) -> Result<(), ExprError> {
        let pos_of = |name: &str| {
            self.source
                .find(name)
                .map(|p| self.source[..p].chars().count() + 1)
                .unwrap_or(1)
        };
        for c in &self.columns {
            match type_of(c) {
                None => {
                    return Err(ExprError {
                        position: pos_of(c),
                        message: format!("unknown column {c:?}"),
                    });
                }
                Some(ColumnType::String) if !self.string_only_compared(&self.root, c) => {
                    return Err(ExprError {
                        position: pos_of(c),
                        message: format!(
                            "column {c:?} is a string: it may only be compared with == or != to a quoted string"
                        ),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn string_only_compared(&self, node: &Node, col: &str) -> bool {
        let idx = self.columns.iter().position(|c| c == col);
        let is_col = |n: &Node| matches!(n, Node::Col(i) if Some(*i) == idx);
        match node {
            Node::Col(_) => !is_col(node),
            Node::Bin(Op::Eq | Op::Ne, l, r) if is_col(l) || is_col(r) => {
                matches!(**l, Node::Str(_)) || matches!(**r, Node::Str(_))
            }
            Node::Bin(_, l, r) => {
                self.string_only_compared(l, col) && self.string_only_compared(r, col)
            }
            Node::Neg(x) | Node::Not(x) | Node::Bucketize(x, _) => {
                self.string_only_compared(x, col)
            }
            Node::Call(_, args) => args.iter().all(|a| self.string_only_compared(a, col)),
            Node::Num(_) | Node::Str(_) => true,
        }
    }

    /// Evaluates on one row; `get(i)` returns the value of `columns()[i]`. Null,
    /// division by zero and domain errors give NaN.
    pub fn eval<'a>(&self, get: &dyn Fn(usize) -> Value<'a>) -> f64 {
        finite(self.node(&self.root, get))
    }

    fn value<'a>(&self, n: &Node, get: &dyn Fn(usize) -> Value<'a>) -> Value<'a> {
        match n {
            Node::Col(i) => get(*i),
            _ => Value::Num(self.node(n, get)),
        }
    }

    fn node<'a>(&self, n: &Node, get: &dyn Fn(usize) -> Value<'a>) -> f64 {
        match n {
            Node::Num(v) => *v,
            Node::Str(_) => f64::NAN,
            Node::Col(i) => num(get(*i)),
            Node::Neg(x) => -self.node(x, get),
            Node::Not(x) => {
                let v = self.node(x, get);
                if v.is_nan() { f64::NAN } else { flag(v == 0.0) }
            }
            Node::Bin(op, l, r) => {
                if matches!(op, Op::Eq | Op::Ne) {
                    let (a, b) = match (&**l, &**r) {
                        (Node::Str(s), other) | (other, Node::Str(s)) => {
                            (Some(s.as_str()), self.value(other, get))
                        }
                        _ => (None, Value::Null),
                    };
                    if let Some(s) = a {
                        return match b {
                            Value::Str(t) => flag((t == s) == (*op == Op::Eq)),
                            _ => f64::NAN,
                        };
                    }
                }
                let a = self.node(l, get);
                let b = self.node(r, get);
                if a.is_nan() || b.is_nan() {
                    return f64::NAN;
                }
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div => finite(a / b),
                    Op::Lt => flag(a < b),
                    Op::Le => flag(a <= b),
                    Op::Gt => flag(a > b),
                    Op::Ge => flag(a >= b),
                    Op::Eq => flag(a == b),
                    Op::Ne => flag(a != b),
                    Op::And => flag(a != 0.0 && b != 0.0),
                    Op::Or => flag(a != 0.0 || b != 0.0),
                }
            }
            Node::Bucketize(x, edges) => {
                let v = self.node(x, get);
                if v.is_nan() {
                    f64::NAN
                } else {
                    edges.iter().filter(|e| v >= **e).count() as f64
                }
            }
            Node::Call(f, args) => {
                let a = |i: usize| self.node(&args[i], get);
                match f {
                    Func::IsNull => match self.value(&args[0], get) {
                        Value::Null => 1.0,
                        Value::Num(x) => flag(x.is_nan()),
                        Value::Str(_) => 0.0,
                    },
                    Func::Coalesce => {
                        let x = a(0);
                        if x.is_nan() { a(1) } else { x }
                    }
                    Func::Log1p => finite(a(0).ln_1p()),
                    Func::Log => finite(a(0).ln()),
                    Func::Exp => finite(a(0).exp()),
                    Func::Sqrt => finite(a(0).sqrt()),
                    Func::Abs => a(0).abs(),
                    Func::Min => a(0).min(a(1)),
                    Func::Max => a(0).max(a(1)),
                    Func::Clip => {
                        let (x, lo, hi) = (a(0), a(1), a(2));
                        if x.is_nan() {
                            f64::NAN
                        } else {
                            x.clamp(lo.min(hi), hi.max(lo))
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, vals: &[(&str, Value<'static>)]) -> f64 {
        let e = Expr::parse(src).unwrap();
        let cols: Vec<Value<'static>> = e
            .columns()
            .iter()
            .map(|c| {
                vals.iter()
                    .find(|(n, _)| n == c)
                    .map(|(_, v)| *v)
                    .unwrap_or(Value::Null)
            })
            .collect();
        e.eval(&|i| cols[i])
    }

    #[test]
    fn arithmetic_precedence_and_functions() {
        let v = [
            ("TotalCharges", Value::Num(100.0)),
            ("tenure", Value::Num(4.0)),
        ];
        assert_eq!(eval("TotalCharges / (tenure + 1)", &v), 20.0);
        assert_eq!(eval("1 + 2 * 3 - -1", &[]), 8.0);
        assert_eq!(eval("clip(tenure, 0, 3)", &v), 3.0);
        assert!((eval("log1p(tenure)", &v) - 5f64.ln()).abs() < 1e-12);
        assert_eq!(eval("bucketize(tenure, [1, 4, 12])", &v), 2.0);
        assert_eq!(eval("bucketize(0, [1, 4, 12])", &[]), 0.0);
        assert_eq!(eval("bucketize(100, [1, 4, 12])", &[]), 3.0);
        assert_eq!(eval("max(tenure, 10) + min(1, 2)", &v), 11.0);
        assert_eq!(eval("1.5e2", &[]), 150.0);
    }

    #[test]
    fn nulls_and_errors_become_nan_and_can_be_handled() {
        let v = [("x", Value::Null), ("y", Value::Num(0.0))];
        assert!(eval("x + 1", &v).is_nan());
        assert!(eval("1 / y", &v).is_nan());
        assert!(eval("log(y)", &v).is_nan());
        assert_eq!(eval("is_null(x)", &v), 1.0);
        assert_eq!(eval("coalesce(x, 7)", &v), 7.0);
    }

    #[test]
    fn strings_compare_and_quoted_names_work() {
        let v = [
            ("Contract", Value::Str("Two year")),
            ("Monthly Fee", Value::Num(3.0)),
        ];
        assert_eq!(eval("Contract == \"Two year\"", &v), 1.0);
        assert_eq!(eval("Contract != 'Two year'", &v), 0.0);
        assert_eq!(eval("`Monthly Fee` * 2 > 5 and not 0", &v), 1.0);
    }

    #[test]
    fn deep_and_long_expressions_are_refused_not_overflowing_the_stack() {
        // Each of these aborted the process (stack overflow) before the bounds.
        for src in [
            "(".repeat(100_000) + "1" + &")".repeat(100_000),
            "-".repeat(100_000) + "1",
            "not ".repeat(50_000) + "1",
            "abs(".repeat(50_000) + "1" + &")".repeat(50_000),
        ] {
            let e = Expr::parse(&src).unwrap_err();
            assert!(e.message.contains("at most 4096"), "{e}");
        }
        // Under the length bound, nesting is still bounded.
        let deep = "(".repeat(65) + "1" + &")".repeat(65);
        let e = Expr::parse(&deep).unwrap_err();
        assert!(e.message.contains("more than 64 levels"), "{e}");
        let chain = vec!["x"; 1_000].join(" + ");
        let e = Expr::parse(&chain).unwrap_err();
        assert!(e.message.contains("1000 levels deep"), "{e}");
        // What a person writes still parses.
        let ok = "(".repeat(30) + "x" + &")".repeat(30) + &" + x".repeat(30);
        assert!(Expr::parse(&ok).is_ok());
    }

    #[test]
    fn errors_name_the_position() {
        let e = Expr::parse("TotalCharges / (tenure + 1").unwrap_err();
        assert!(e.message.contains("expected `)`"), "{e}");
        assert_eq!(e.position, 27);
        let e = Expr::parse("foo(1)").unwrap_err();
        assert!(e.message.contains("unknown function `foo`"), "{e}");
        assert_eq!(e.position, 1);
        let e = Expr::parse("clip(1, 2)").unwrap_err();
        assert!(e.message.contains("3 argument"), "{e}");
        let e = Expr::parse("1 + # 2").unwrap_err();
        assert_eq!(e.position, 5);
        let e = Expr::parse("bucketize(x, [3, 1])").unwrap_err();
        assert!(e.message.contains("increasing"), "{e}");
        assert!(Expr::parse("1 2").is_err());
    }

    #[test]
    fn check_refuses_unknown_columns_and_string_arithmetic() {
        let types = |c: &str| match c {
            "tenure" => Some(ColumnType::Int),
            "Contract" => Some(ColumnType::String),
            _ => None,
        };
        assert!(Expr::parse("tenure * 2").unwrap().check(&types).is_ok());
        assert!(
            Expr::parse("Contract == \"One year\"")
                .unwrap()
                .check(&types)
                .is_ok()
        );
        let e = Expr::parse("tenure + nope")
            .unwrap()
            .check(&types)
            .unwrap_err();
        assert!(e.message.contains("unknown column \"nope\""), "{e}");
        assert_eq!(e.position, 10);
        let e = Expr::parse("Contract + 1")
            .unwrap()
            .check(&types)
            .unwrap_err();
        assert!(e.message.contains("string"), "{e}");
    }
}
