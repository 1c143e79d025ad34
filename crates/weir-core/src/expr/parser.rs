//! The syntax tree, by precedence climbing.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ast {
    Lit(Val),
    Var(String),
    /// `#` inside a closure.
    Hash,
    Member(Box<Ast>, String, bool),
    Index(Box<Ast>, Box<Ast>),
    Slice(Box<Ast>, Option<Box<Ast>>, Option<Box<Ast>>),
    Call(String, Vec<Ast>),
    Closure(Box<Ast>),
    Unary(UnOp, Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    Cond(Box<Ast>, Box<Ast>, Box<Ast>),
    List(Vec<Ast>),
    MapLit(Vec<(Ast, Ast)>),
}

pub(super) struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    mode: Mode,
    depth: usize,
}

pub(super) fn parse(src: &str, mode: Mode) -> R<Ast> {
    let toks = lex(src, mode)?;
    if toks.is_empty() {
        return err("empty expression");
    }
    let mut p = Parser {
        toks,
        pos: 0,
        mode,
        depth: 0,
    };
    let ast = p.expr(0)?;
    if p.pos < p.toks.len() {
        return err(format!("unexpected `{}`", show(&p.toks[p.pos])));
    }
    Ok(ast)
}

pub(super) fn show(t: &Tok) -> String {
    match t {
        Tok::Num(n, _) => format_float(*n),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Ident(s) => s.clone(),
        Tok::Op(o) => o.to_string(),
    }
}

/// A prefix operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnOp {
    /// `!`, `not`
    Not,
    /// `-`
    Neg,
}

/// A binary operator; the spellings that mean the same (`==`/`===`, `&&`/`and`, `=~`/`matches`)
/// are one operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Matches,
    NotMatches,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Range,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinOp {
    /// The operator a symbol or word spells.
    pub(super) fn parse(s: &str) -> Option<BinOp> {
        use BinOp::*;
        Some(match s {
            "??" => Coalesce,
            "||" | "or" => Or,
            "&&" | "and" => And,
            "==" | "===" => Eq,
            "!=" | "!==" => Ne,
            "<" => Lt,
            ">" => Gt,
            "<=" => Le,
            ">=" => Ge,
            "=~" | "matches" => Matches,
            "!~" => NotMatches,
            "in" => In,
            "not in" => NotIn,
            "contains" => Contains,
            "startsWith" => StartsWith,
            "endsWith" => EndsWith,
            ".." => Range,
            "+" => Add,
            "-" => Sub,
            "*" => Mul,
            "/" => Div,
            "%" => Rem,
            "**" => Pow,
            _ => return None,
        })
    }

    /// Precedence, low to high.
    pub(super) fn prec(self) -> u8 {
        use BinOp::*;
        match self {
            Coalesce => 1,
            Or => 2,
            And => 3,
            Eq | Ne | Lt | Gt | Le | Ge | Matches | NotMatches | In | NotIn | Contains
            | StartsWith | EndsWith => 4,
            Range => 5,
            Add | Sub => 6,
            Mul | Div | Rem => 7,
            Pow => 8,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        use BinOp::*;
        match self {
            Coalesce => "??",
            Or => "||",
            And => "&&",
            Eq => "==",
            Ne => "!=",
            Lt => "<",
            Gt => ">",
            Le => "<=",
            Ge => ">=",
            Matches => "matches",
            NotMatches => "!~",
            In => "in",
            NotIn => "not in",
            Contains => "contains",
            StartsWith => "startsWith",
            EndsWith => "endsWith",
            Range => "..",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Rem => "%",
            Pow => "**",
        }
    }
}

impl std::fmt::Display for BinOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Parser {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    pub(super) fn eat_op(&mut self, op: &str) -> bool {
        if let Some(Tok::Op(o)) = self.peek()
            && *o == op
        {
            self.pos += 1;
            return true;
        }
        false
    }
    pub(super) fn expect(&mut self, op: &str) -> R<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            match self.peek() {
                Some(t) => err(format!("expected `{op}`, found `{}`", show(t))),
                None => err(format!("expected `{op}` at end of expression")),
            }
        }
    }
    pub(super) fn peek_binary(&self) -> Option<BinOp> {
        match self.peek()? {
            Tok::Op(o) => BinOp::parse(o),
            Tok::Ident(w) => match w.as_str() {
                "or" | "and" | "in" | "matches" | "contains" | "startsWith" | "endsWith" => {
                    BinOp::parse(w)
                }
                "not" if matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(w)) if w == "in") => {
                    Some(BinOp::NotIn)
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn expr(&mut self, min: u8) -> R<Ast> {
        self.depth += 1;
        if self.depth > 200 {
            return err("expression nested too deeply");
        }
        let mut lhs = self.unary()?;
        loop {
            if min == 0 && self.eat_op("?") {
                let then = self.expr(0)?;
                self.expect(":")?;
                let other = self.expr(0)?;
                lhs = Ast::Cond(Box::new(lhs), Box::new(then), Box::new(other));
                continue;
            }
            let Some(op) = self.peek_binary() else { break };
            let prec = op.prec();
            if prec <= min && !(prec == 0 && min == 0) {
                break;
            }
            self.pos += if op == BinOp::NotIn { 2 } else { 1 };
            let rhs = if op == BinOp::Pow {
                self.expr(prec - 1)?
            } else {
                self.expr(prec)?
            };
            lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    pub(super) fn unary(&mut self) -> R<Ast> {
        if self.eat_op("!") {
            return Ok(Ast::Unary(UnOp::Not, Box::new(self.unary()?)));
        }
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == "not") {
            self.pos += 1;
            return Ok(Ast::Unary(UnOp::Not, Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Ok(Ast::Unary(UnOp::Neg, Box::new(self.unary()?)));
        }
        if self.eat_op("+") {
            return self.unary();
        }
        let prim = self.primary()?;
        self.postfix(prim)
    }

    pub(super) fn primary(&mut self) -> R<Ast> {
        let Some(tok) = self.peek().cloned() else {
            return err("unexpected end of expression");
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Num(n, float) => Ast::Lit(if float || n.fract() != 0.0 || n.abs() > 9e15 {
                Val::Float(n)
            } else {
                Val::Int(n as i64)
            }),
            Tok::Str(s) => Ast::Lit(Val::Str(s)),
            Tok::Ident(w) => match w.as_str() {
                "true" => Ast::Lit(Val::Bool(true)),
                "false" => Ast::Lit(Val::Bool(false)),
                "nil" | "null" => Ast::Lit(Val::Null),
                _ if self.mode == Mode::Govaluate => Ast::Lit(Val::Str(w)),
                _ if matches!(self.peek(), Some(Tok::Op("("))) => {
                    self.pos += 1;
                    Ast::Call(w, self.args(")")?)
                }
                "sprig" if matches!(self.peek(), Some(Tok::Op("."))) => {
                    self.pos += 1;
                    let Some(Tok::Ident(f)) = self.peek().cloned() else {
                        return err("expected a sprig function name");
                    };
                    self.pos += 1;
                    self.expect("(")?;
                    Ast::Call(f, self.args(")")?)
                }
                _ => Ast::Var(w),
            },
            Tok::Op("#") => Ast::Hash,
            Tok::Op("(") => {
                // govaluate array literal: (a, b, c)
                let first = self.expr(0)?;
                if self.eat_op(",") {
                    let mut items = vec![first];
                    items.extend(self.args(")")?);
                    Ast::List(items)
                } else {
                    self.expect(")")?;
                    first
                }
            }
            Tok::Op("[") => Ast::List(self.args("]")?),
            Tok::Op("{") => {
                if self.eat_op("}") {
                    return Ok(Ast::MapLit(Vec::new()));
                }
                let first = self.expr(0)?;
                if self.eat_op(":") {
                    let mut entries = vec![(first, self.expr(0)?)];
                    while self.eat_op(",") {
                        if matches!(self.peek(), Some(Tok::Op("}"))) {
                            break;
                        }
                        let k = match self.peek().cloned() {
                            Some(Tok::Ident(w)) => {
                                self.pos += 1;
                                Ast::Lit(Val::Str(w))
                            }
                            _ => self.expr(0)?,
                        };
                        self.expect(":")?;
                        entries.push((k, self.expr(0)?));
                    }
                    self.expect("}")?;
                    let entries = entries
                        .into_iter()
                        .map(|(k, v)| match k {
                            Ast::Var(name) => (Ast::Lit(Val::Str(name)), v),
                            k => (k, v),
                        })
                        .collect();
                    Ast::MapLit(entries)
                } else {
                    self.expect("}")?;
                    Ast::Closure(Box::new(first))
                }
            }
            Tok::Op(o) => return err(format!("unexpected `{o}`")),
        })
    }

    pub(super) fn args(&mut self, close: &str) -> R<Vec<Ast>> {
        let mut out = Vec::new();
        if self.eat_op(close) {
            return Ok(out);
        }
        loop {
            out.push(self.expr(0)?);
            if self.eat_op(close) {
                return Ok(out);
            }
            self.expect(",")?;
            if self.eat_op(close) {
                return Ok(out);
            }
        }
    }

    pub(super) fn postfix(&mut self, mut ast: Ast) -> R<Ast> {
        loop {
            if self.eat_op(".") || self.eat_op("?.") {
                let optional = matches!(self.toks.get(self.pos - 1), Some(Tok::Op("?.")));
                match self.peek().cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        if self.eat_op("(") {
                            let mut args = vec![ast];
                            args.extend(self.args(")")?);
                            ast = Ast::Call(format!(".{name}"), args);
                        } else {
                            ast = Ast::Member(Box::new(ast), name, optional);
                        }
                    }
                    Some(Tok::Num(n, false)) => {
                        self.pos += 1;
                        ast = Ast::Member(Box::new(ast), format_float(n), optional);
                    }
                    _ => return err("expected a name after `.`"),
                }
            } else if self.eat_op("[") {
                if self.eat_op(":") {
                    let hi = if self.eat_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expr(0)?))
                    };
                    if hi.is_some() {
                        self.expect("]")?;
                    }
                    ast = Ast::Slice(Box::new(ast), None, hi);
                    continue;
                }
                let idx = self.expr(0)?;
                if self.eat_op(":") {
                    let hi = if self.eat_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expr(0)?))
                    };
                    if hi.is_some() {
                        self.expect("]")?;
                    }
                    ast = Ast::Slice(Box::new(ast), Some(Box::new(idx)), hi);
                } else {
                    self.expect("]")?;
                    ast = Ast::Index(Box::new(ast), Box::new(idx));
                }
            } else {
                return Ok(ast);
            }
        }
    }
}
