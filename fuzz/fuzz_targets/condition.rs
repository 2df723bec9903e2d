//! Any text as a CEL condition: compiling and evaluating never panic or
//! overflow the stack; the outcome is true, false or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::condition::{CompiledCondition, Facts};
use mandate_core::id::ConditionId;
use mandate_core::model::{Condition, Evaluation, OnFailure};

fuzz_target!(|data: &[u8]| {
    let Ok(expression) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = ConditionId::new("fuzz") else {
        return;
    };
    let c = Condition {
        id,
        expression: expression.to_owned(),
        evaluation: Evaluation::PerAction,
        on_failure: OnFailure::Deny,
    };
    let Ok(compiled) = CompiledCondition::new(&c) else {
        return;
    };
    let facts = Facts::from_json(serde_json::json!({
        "procurement": {"contingency_program": {"status": "active"}, "budget": {"remaining": 10}},
        "list": [1, 2, 3], "text": "abc"
    }))
    .expect("facts");
    // Within its budget (as the decision checks before evaluating) it
    // evaluates; nested comprehensions never got this far.
    let input = compiled.variables().iter().map(|v| facts.size_of(v)).sum();
    if !compiled.iterates() || compiled.within_budget(input) {
        let _ = compiled.evaluate(&facts.scope());
    }
});
