//! Conditions: CEL expressions compiled once per mandate, evaluated per
//! action against the mission facts, the action and the time.
//!
//! Variables a condition may read:
//!
//! | name | value |
//! | --- | --- |
//! | each top-level member of the facts | e.g. `procurement` for `procurement.contingency_program.status` |
//! | `action` | `{"name": ...}` |
//! | `resource` | `{"type": ..., "id": ..., "properties": {...}}` |
//! | `context` | the request's `context` object |
//! | `now` | the decision time, a CEL `timestamp` |
//! | `mandate` | `{"id", "agent": {"id", "instance"}, "principal": {"sub", "iss"}}` of the leaf |
//!
//! Reserved names shadow facts of the same name. A reference to anything
//! else is an evaluation error, which denies (`condition_error:<id>`).

use std::sync::Arc;

use cel::parser::{Expression, Parser};
use cel::{Context, Value as CelValue};
use serde_json::Value;

use crate::id::ConditionId;
use crate::model::{Condition, OnFailure};

mod direct;
pub(crate) use direct::Input as DirectInput;

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 2048;
/// Deepest accepted nesting of brackets and of the parser's own recursion.
pub const MAX_EXPRESSION_DEPTH: u16 = 16;
/// Most conditions in one mandate (ancestors' included).
pub const MAX_CONDITIONS: usize = 32;
/// Deepest nesting of a facts document: below [`crate::json::MAX_DEPTH`], so
/// that a facts document wrapped in a signal (a SET's `events`, its type,
/// `facts`) still reads everywhere it travels.
pub const MAX_FACTS_DEPTH: usize = 24;
/// Largest facts document, in bytes of JSON.
pub const MAX_FACTS_BYTES: usize = 1 << 20;

/// Most nodes in one expression's syntax tree.
pub const MAX_EXPRESSION_NODES: usize = 256;
/// Most comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) in
/// one expression. None may nest inside another.
pub const MAX_COMPREHENSIONS: usize = 4;
/// The evaluation budget of one condition, in estimated steps (see
/// [`CompiledCondition::within_budget`]): about a tenth of a second of CPU
/// at worst on the slowest machine we measured.
pub const MAX_EVALUATION_STEPS: u64 = 1_000_000;

/// Names bound by the decision; facts cannot take them.
pub const RESERVED_VARIABLES: [&str; 5] = ["action", "resource", "context", "now", "mandate"];

/// Why an expression was refused at issue time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Longer than [`MAX_EXPRESSION_BYTES`].
    #[error("expression is longer than {MAX_EXPRESSION_BYTES} bytes")]
    TooLong,
    /// Nests brackets deeper than [`MAX_EXPRESSION_DEPTH`].
    #[error("expression nests deeper than {MAX_EXPRESSION_DEPTH} levels")]
    TooDeep,
    /// Did not parse.
    #[error("expression does not parse: {0}")]
    Parse(String),
    /// Has more than [`MAX_EXPRESSION_NODES`] nodes.
    #[error("expression has more than {MAX_EXPRESSION_NODES} terms")]
    TooLarge,
    /// Has more than [`MAX_COMPREHENSIONS`] comprehensions.
    #[error("expression has more than {MAX_COMPREHENSIONS} comprehension macros")]
    TooManyComprehensions,
    /// Has a comprehension inside another.
    #[error("expression nests a comprehension macro inside another")]
    NestedComprehension,
}

/// What evaluating an expression can cost, known from its syntax alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Shape {
    nodes: u64,
    /// Comprehensions whose body reads only its own variables and literals.
    local: u64,
    /// Comprehensions whose body also reads an outer variable (so each
    /// iteration may touch the whole input).
    outer: u64,
}

fn shape(e: &Expression) -> Result<Shape, ConditionError> {
    let mut sh = Shape::default();
    walk(e, 0, &mut sh)?;
    if usize::try_from(sh.nodes).unwrap_or(usize::MAX) > MAX_EXPRESSION_NODES {
        return Err(ConditionError::TooLarge);
    }
    if usize::try_from(sh.local + sh.outer).unwrap_or(usize::MAX) > MAX_COMPREHENSIONS {
        return Err(ConditionError::TooManyComprehensions);
    }
    Ok(sh)
}

fn walk(e: &Expression, comprehension_depth: u8, sh: &mut Shape) -> Result<(), ConditionError> {
    use cel::common::ast::{EntryExpr, Expr};
    sh.nodes += 1;
    if usize::try_from(sh.nodes).unwrap_or(usize::MAX) > MAX_EXPRESSION_NODES {
        return Err(ConditionError::TooLarge);
    }
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, comprehension_depth, sh)?;
            }
            for a in &c.args {
                walk(a, comprehension_depth, sh)?;
            }
        }
        Expr::Comprehension(c) => {
            if comprehension_depth > 0 {
                return Err(ConditionError::NestedComprehension);
            }
            walk(&c.iter_range, 1, sh)?;
            for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(part, 1, sh)?;
            }
            let own = |name: &str| {
                name == c.iter_var || Some(name) == c.iter_var2.as_deref() || name == c.accu_var
            };
            let reads_outer = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .any(|part| part.references().variables().into_iter().any(|v| !own(v)));
            if reads_outer {
                sh.outer += 1;
            } else {
                sh.local += 1;
            }
        }
        Expr::List(l) => {
            for x in &l.elements {
                walk(x, comprehension_depth, sh)?;
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    walk(&me.key, comprehension_depth, sh)?;
                    walk(&me.value, comprehension_depth, sh)?;
                }
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => walk(&f.value, comprehension_depth, sh)?,
                    EntryExpr::MapEntry(me) => {
                        walk(&me.key, comprehension_depth, sh)?;
                        walk(&me.value, comprehension_depth, sh)?;
                    }
                }
            }
        }
        Expr::Select(s) => walk(&s.operand, comprehension_depth, sh)?,
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    Ok(())
}

/// How big a JSON input is for the evaluation budget: one per value, plus one
/// per 64 bytes of string.
#[must_use]
pub fn input_size(v: &Value) -> u64 {
    match v {
        Value::Array(a) => 1 + a.iter().map(input_size).sum::<u64>(),
        Value::Object(m) => {
            1 + m
                .iter()
                .map(|(k, v)| 1 + k.len() as u64 / 64 + input_size(v))
                .sum::<u64>()
        }
        Value::String(s) => 1 + s.len() as u64 / 64,
        _ => 1,
    }
}

/// Parses a CEL expression within the size and depth bounds.
///
/// # Errors
/// See [`ConditionError`].
pub fn compile(source: &str) -> Result<Expression, ConditionError> {
    compile_with_shape(source).map(|(program, _)| program)
}

fn compile_with_shape(source: &str) -> Result<(Expression, Shape), ConditionError> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(ConditionError::TooLong);
    }
    if bracket_depth(source) > usize::from(MAX_EXPRESSION_DEPTH) {
        return Err(ConditionError::TooDeep);
    }
    let program = Parser::new()
        .max_recursion_depth(MAX_EXPRESSION_DEPTH)
        .parse(source)
        .map_err(|e| {
            let msg = e.to_string();
            ConditionError::Parse(msg.lines().next().unwrap_or("syntax error").to_owned())
        })?;
    // Size and comprehension bounds, wherever an expression is accepted.
    let shape = shape(&program)?;
    Ok((program, shape))
}

/// The deepest nesting of `(`, `[` and `{` outside string literals: checked
/// before parsing, because the parser recurses before it counts.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A condition ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    /// The condition's id.
    pub id: ConditionId,
    /// What happens when it is false.
    pub on_failure: OnFailure,
    /// The source text.
    pub expression: String,
    program: Arc<Expression>,
    /// The same program in the direct evaluator's subset, when it is.
    direct: Option<Arc<direct::Direct>>,
    variables: Vec<String>,
    shape: Shape,
}

impl CompiledCondition {
    /// Compiles a mandate condition.
    ///
    /// # Errors
    /// See [`ConditionError`].
    pub fn new(c: &Condition) -> Result<Self, ConditionError> {
        let (program, shape) = compile_with_shape(&c.expression)?;
        let variables = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_owned)
            .collect();
        Ok(Self {
            id: c.id.clone(),
            on_failure: c.on_failure,
            expression: c.expression.clone(),
            direct: direct::Direct::compile(&program).map(Arc::new),
            program: Arc::new(program),
            variables,
            shape,
        })
    }

    /// The same program under another condition's id and `on_failure`
    /// (whose expression is identical).
    #[must_use]
    pub fn with_identity(&self, c: &Condition) -> Self {
        Self {
            id: c.id.clone(),
            on_failure: c.on_failure,
            expression: self.expression.clone(),
            program: Arc::clone(&self.program),
            direct: self.direct.clone(),
            variables: self.variables.clone(),
            shape: self.shape,
        }
    }

    /// Whether the expression iterates (has a comprehension), so that its
    /// cost depends on the size of its inputs.
    #[must_use]
    pub fn iterates(&self) -> bool {
        self.shape.local + self.shape.outer > 0
    }

    /// Whether evaluating over inputs of `input` total size (see
    /// [`input_size`], summed over the variables the expression reads) stays
    /// within [`MAX_EVALUATION_STEPS`]. Comprehensions cannot nest, so one
    /// whose body reads only its own variables costs about `nodes × input`,
    /// and one whose body reads an outer variable about `nodes × input²`.
    #[must_use]
    pub fn within_budget(&self, input: u64) -> bool {
        let sh = self.shape;
        let per_local = sh.nodes.saturating_mul(input);
        let per_outer = per_local.saturating_mul(input);
        let steps = sh
            .local
            .saturating_mul(per_local)
            .saturating_add(sh.outer.saturating_mul(per_outer))
            .saturating_add(sh.nodes);
        steps <= MAX_EVALUATION_STEPS
    }

    /// The top-level variables the expression reads.
    #[must_use]
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// Whether the direct evaluator can answer for this expression (see
    /// `evaluate_direct`, which the decision tries before the CEL interpreter).
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Evaluates without building CEL values, when the expression is in the
    /// direct evaluator's subset and the inputs give it a `bool`; `None`
    /// means the interpreter must decide ([`Self::evaluate`]), and when both
    /// answer they agree.
    pub(crate) fn evaluate_direct(&self, input: &DirectInput<'_>) -> Option<Outcome> {
        match self.direct.as_ref()?.evaluate(input)? {
            true => Some(Outcome::True),
            false => Some(Outcome::False),
        }
    }

    /// Evaluates against a scope built by [`Facts::scope`].
    #[must_use]
    pub fn evaluate(&self, scope: &Context<'_, '_>) -> Outcome {
        match CelValue::resolve(&self.program, scope) {
            Ok(CelValue::Bool(true)) => Outcome::True,
            Ok(CelValue::Bool(false)) => Outcome::False,
            Ok(other) => Outcome::Error(format!("result is {:?}, not a bool", other.type_of())),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

/// The result of evaluating one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Holds.
    True,
    /// Does not hold: `condition_failed:<id>`.
    False,
    /// Could not be evaluated, or was not a bool: `condition_error:<id>`.
    Error(String),
}

/// Why a facts document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// The document is not a JSON object.
    #[error("facts: must be a JSON object")]
    NotAnObject,
    /// Too large.
    #[error("facts: larger than {MAX_FACTS_BYTES} bytes")]
    TooLarge,
    /// Nested deeper than [`MAX_FACTS_DEPTH`].
    #[error("facts: nested deeper than {MAX_FACTS_DEPTH} levels")]
    TooDeep,
    /// A member cannot be a CEL variable.
    #[error("facts.{0}: not usable as a CEL variable name (reserved, or not an identifier)")]
    BadName(String),
    /// A value cannot be converted.
    #[error("facts.{0}: cannot be converted to a CEL value")]
    Conversion(String),
}

/// Mission facts, converted to CEL values once and kept as the base scope of
/// every evaluation. Rebuild only when the facts change.
#[derive(Clone)]
pub struct Facts {
    json: Arc<Value>,
    base: Arc<Context<'static, 'static>>,
    sizes: Arc<std::collections::HashMap<String, u64>>,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts").field("json", &self.json).finish()
    }
}

/// A context with no variables, over CEL's standard library built once per
/// process (`Context::default()` builds the library again, ~270k
/// instructions, for every context).
pub(crate) fn empty_context() -> Context<'static, 'static> {
    static STDLIB: std::sync::LazyLock<Arc<cel::Env>> =
        std::sync::LazyLock::new(|| Arc::new(cel::Env::stdlib()));
    Context::with_env(Arc::clone(&STDLIB))
}

impl Default for Facts {
    fn default() -> Self {
        Self {
            json: Arc::new(Value::Object(serde_json::Map::new())),
            base: Arc::new(empty_context()),
            sizes: Arc::default(),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Facts {
    /// Converts a facts document: an object whose members become variables.
    ///
    /// # Errors
    /// See [`FactsError`].
    pub fn from_json(json: Value) -> Result<Self, FactsError> {
        let Value::Object(map) = &json else {
            return Err(FactsError::NotAnObject);
        };
        if json.to_string().len() > MAX_FACTS_BYTES {
            return Err(FactsError::TooLarge);
        }
        if depth(&json) > MAX_FACTS_DEPTH {
            return Err(FactsError::TooDeep);
        }
        let mut base = empty_context();
        let mut sizes = std::collections::HashMap::new();
        for (name, value) in map {
            if !is_identifier(name) || RESERVED_VARIABLES.contains(&name.as_str()) {
                return Err(FactsError::BadName(name.clone()));
            }
            sizes.insert(name.clone(), input_size(value));
            let v = cel::to_value(value).map_err(|_| FactsError::Conversion(name.clone()))?;
            base.add_variable_from_value(name.clone(), v);
        }
        Ok(Self {
            json: Arc::new(json),
            base: Arc::new(base),
            sizes: Arc::new(sizes),
        })
    }

    /// The size (see [`input_size`]) of the top-level fact `name`, 0 when absent.
    #[must_use]
    pub fn size_of(&self, name: &str) -> u64 {
        self.sizes.get(name).copied().unwrap_or(0)
    }

    /// The facts as JSON.
    #[must_use]
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The facts' top-level members.
    pub(crate) fn members(&self) -> &serde_json::Map<String, Value> {
        static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> =
            std::sync::LazyLock::new(serde_json::Map::new);
        match &*self.json {
            Value::Object(m) => m,
            _ => &EMPTY,
        }
    }

    /// A child scope over the facts, for one decision.
    #[must_use]
    pub fn scope(&self) -> Context<'_, 'static> {
        self.base.new_inner_scope()
    }
}

/// The nesting depth of arrays and objects in `v` (a scalar is 0).
#[must_use]
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Converts JSON to a CEL value; `null` when it cannot be represented.
#[must_use]
pub fn json_to_cel(v: &Value) -> CelValue {
    cel::to_value(v).unwrap_or(CelValue::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Evaluation;
    use serde_json::json;

    fn cond(expr: &str) -> CompiledCondition {
        CompiledCondition::new(&Condition {
            id: ConditionId::new("c").unwrap(),
            expression: expr.into(),
            evaluation: Evaluation::PerAction,
            on_failure: OnFailure::Deny,
        })
        .unwrap()
    }

    fn facts(status: &str) -> Facts {
        Facts::from_json(json!({"procurement": {"contingency_program": {"status": status}}}))
            .unwrap()
    }

    #[test]
    fn a_true_condition_holds_and_a_false_one_does_not() {
        let c = cond("procurement.contingency_program.status == 'active'");
        assert_eq!(c.evaluate(&facts("active").scope()), Outcome::True);
        assert_eq!(c.evaluate(&facts("cancelled").scope()), Outcome::False);
        assert_eq!(c.variables(), ["procurement"]);
    }

    #[test]
    fn a_non_boolean_or_failing_condition_is_an_error() {
        assert!(matches!(
            cond("1 + 1").evaluate(&facts("active").scope()),
            Outcome::Error(_)
        ));
        assert!(matches!(
            cond("missing.field == 1").evaluate(&facts("active").scope()),
            Outcome::Error(_)
        ));
        assert!(matches!(
            cond("1 / 0 == 1").evaluate(&facts("active").scope()),
            Outcome::Error(_)
        ));
    }

    #[test]
    fn oversized_and_overdeep_expressions_are_refused() {
        assert_eq!(compile(&"a".repeat(3000)), Err(ConditionError::TooLong));
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert_eq!(compile(&deep), Err(ConditionError::TooDeep));
        let nested_lists = format!("size({}1{}) == 1", "[".repeat(17), "]".repeat(17));
        assert_eq!(compile(&nested_lists), Err(ConditionError::TooDeep));
        // Brackets inside string literals do not count.
        assert!(compile(&format!("'{}' == ''", "(".repeat(100))).is_ok());
        assert!(matches!(compile("a =="), Err(ConditionError::Parse(_))));
    }

    #[test]
    fn nested_or_numerous_comprehensions_are_refused_when_the_mandate_is_read() {
        // The shape of the 274-byte condition that ran for a minute: each
        // level multiplies the work by the list's length.
        let l = "[1,2,3,4,5,6,7,8,9,10]";
        let nested = format!("{l}.all(a, {l}.all(b, {l}.all(c, {l}.all(d, a+b+c+d >= 0))))");
        assert_eq!(
            compile(&nested).map(|_| ()),
            Err(ConditionError::NestedComprehension)
        );
        let c = Condition {
            id: ConditionId::new("c").unwrap(),
            expression: nested,
            evaluation: Evaluation::PerAction,
            on_failure: OnFailure::Deny,
        };
        assert_eq!(
            CompiledCondition::new(&c).unwrap_err(),
            ConditionError::NestedComprehension
        );
        let many = vec![format!("{l}.exists(x, x == 1)"); 5].join(" && ");
        let c = Condition {
            expression: many,
            ..c
        };
        assert_eq!(
            CompiledCondition::new(&c).unwrap_err(),
            ConditionError::TooManyComprehensions
        );
        let long = vec!["1 == 1"; 100].join(" && ");
        let c = Condition {
            expression: long,
            ..c
        };
        assert_eq!(
            CompiledCondition::new(&c).unwrap_err(),
            ConditionError::TooLarge
        );
    }

    #[test]
    fn a_comprehension_over_a_large_input_is_over_budget() {
        let local = cond("context.items.all(i, i > 0)");
        assert!(local.iterates());
        assert!(local.within_budget(10_000));
        assert!(!local.within_budget(1_000_000));
        let outer = cond("context.items.all(i, size(context.items + context.items) > i)");
        assert!(outer.within_budget(100));
        assert!(!outer.within_budget(10_000));
        assert!(!cond("1 == 1").iterates());
    }

    #[test]
    fn facts_nested_too_deep_are_refused() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!({ "a": v });
        }
        assert_eq!(
            Facts::from_json(json!({ "x": v })).unwrap_err(),
            FactsError::TooDeep
        );
    }

    #[test]
    fn facts_may_not_take_reserved_names() {
        assert_eq!(
            Facts::from_json(json!({"now": 1})).unwrap_err(),
            FactsError::BadName("now".into())
        );
        assert_eq!(
            Facts::from_json(json!([1])).unwrap_err(),
            FactsError::NotAnObject
        );
    }
}
