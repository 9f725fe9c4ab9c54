//! Value nodes: constants, integer and float arithmetic, text, and a value display output.
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeResult, NodeSpec, OutputSpec as Out, Value,
    ValueType as T,
};

/// An integer constant, for sharing one value (a seed, a size) between nodes.
pub struct IntConstant;
impl Node for IntConstant {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "Int",
            category: "values",
            doc: "an integer constant",
            version: 1,
            inputs: vec![In::new("value", T::Int, "the value").default(0)],
            outputs: vec![Out::new("value", T::Int, "the value")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        Ok(vec![Value::Int(inputs.int("value")?)])
    }
}

/// a + b (wrapping on overflow, so no input can make it panic).
pub struct AddInt;
impl Node for AddInt {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "AddInt",
            category: "values",
            doc: "a + b for integers",
            version: 1,
            inputs: vec![
                In::new("a", T::Int, "left operand").default(0),
                In::new("b", T::Int, "right operand").default(0),
            ],
            outputs: vec![Out::new("sum", T::Int, "a + b")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        Ok(vec![Value::Int(
            inputs.int("a")?.wrapping_add(inputs.int("b")?),
        )])
    }
}

/// Float arithmetic with a chosen operation.
pub struct MathFloat;
impl Node for MathFloat {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "MathFloat",
            category: "values",
            doc: "a (op) b for floats",
            version: 1,
            inputs: vec![
                In::new("a", T::Float, "left operand").default(0.0),
                In::new("b", T::Float, "right operand").default(0.0),
                In::new("op", T::Enum, "the operation")
                    .choices(&["add", "subtract", "multiply", "divide", "min", "max"])
                    .default("add"),
            ],
            outputs: vec![Out::new("result", T::Float, "the result")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let (a, b) = (inputs.float("a")?, inputs.float("b")?);
        let r = match inputs.string("op")? {
            "add" => a + b,
            "subtract" => a - b,
            "multiply" => a * b,
            "divide" if b == 0.0 => {
                return Err(weft_engine::NodeError::msg(
                    "division by zero (input 'b' is 0)",
                ))
            }
            "divide" => a / b,
            "min" => a.min(b),
            "max" => a.max(b),
            other => return Err(weft_engine::NodeError::msg(format!("unknown op '{other}'"))),
        };
        Ok(vec![Value::Float(r)])
    }
}

/// Joins two texts.
pub struct ConcatText;
impl Node for ConcatText {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ConcatText",
            category: "values",
            doc: "a followed by b, with an optional separator",
            version: 1,
            inputs: vec![
                In::new("a", T::String, "first text").default(""),
                In::new("b", T::String, "second text").default(""),
                In::new("separator", T::String, "placed between a and b").default(""),
            ],
            outputs: vec![Out::new("text", T::String, "the joined text")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        Ok(vec![Value::String(format!(
            "{}{}{}",
            inputs.string("a")?,
            inputs.string("separator")?,
            inputs.string("b")?
        ))])
    }
}

/// An output node that shows an integer (the CLI prints outputs of output nodes).
pub struct ShowInt;
impl Node for ShowInt {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ShowInt",
            category: "values",
            doc: "shows an integer (an output node)",
            version: 1,
            inputs: vec![In::new("value", T::Int, "the integer to show")],
            outputs: vec![Out::new("value", T::Int, "the same integer")],
            output_node: true,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        Ok(vec![Value::Int(inputs.int("value")?)])
    }
}

/// An output node that shows a text.
pub struct ShowText;
impl Node for ShowText {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ShowText",
            category: "values",
            doc: "shows a text (an output node)",
            version: 1,
            inputs: vec![In::new("text", T::String, "the text to show").multiline()],
            outputs: vec![Out::new("text", T::String, "the same text")],
            output_node: true,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        Ok(vec![Value::String(inputs.string("text")?.to_string())])
    }
}
