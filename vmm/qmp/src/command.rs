//! One QMP message from a client, validated as the reference does, and the
//! messages a server answers with.

use serde_json::{Map, Value, json};

/// The reference's error classes (`QapiErrorClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Everything but the cases below.
    GenericError,
    /// An unknown command, or a command before/after negotiation.
    CommandNotFound,
    /// A device or QOM path that does not exist.
    DeviceNotFound,
}

impl ErrorClass {
    /// The class as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
        }
    }
}

/// An error answer: class and human-readable description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {desc}", class.as_str())]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl QmpError {
    /// A `GenericError`.
    pub fn generic(desc: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// A `CommandNotFound` for `name`, in the reference's words.
    pub fn not_found(name: &str) -> Self {
        Self {
            class: ErrorClass::CommandNotFound,
            desc: format!("The command {name} has not been found"),
        }
    }
}

/// A validated `execute` message.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The command's name.
    pub name: String,
    /// Its arguments (empty when absent).
    pub args: Args,
    /// The client's `id`, echoed in the answer.
    pub id: Option<Value>,
}

impl Command {
    /// Validates one object of the stream. On error, the `id` (when the
    /// object had one) to echo with it.
    pub fn parse(bytes: &[u8]) -> Result<Command, (QmpError, Option<Value>)> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| (QmpError::generic(format!("JSON parse error, {e}")), None))?;
        let Value::Object(mut obj) = v else {
            return Err((QmpError::generic("QMP input must be a JSON object"), None));
        };
        let id = obj.remove("id");
        let fail = |d: &str| Err((QmpError::generic(d), id.clone()));
        if obj.contains_key("exec-oob") {
            return fail(
                "QMP input member 'exec-oob' is not supported (out-of-band is not offered)",
            );
        }
        let name = match obj.remove("execute") {
            None => return fail("QMP input lacks member 'execute'"),
            Some(Value::String(s)) => s,
            Some(_) => return fail("QMP input member 'execute' must be a string"),
        };
        let args = match obj.remove("arguments") {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return fail("QMP input member 'arguments' must be an object"),
        };
        if let Some(k) = obj.keys().next() {
            return fail(&format!("QMP input member '{k}' is unexpected"));
        }
        Ok(Command {
            name,
            args: Args(args),
            id,
        })
    }
}

/// A command's arguments, read with the reference's error texts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args(pub Map<String, Value>);

impl Args {
    /// Refuses any argument not in `known` ("Parameter 'x' is unexpected").
    pub fn only(&self, known: &[&str]) -> Result<(), QmpError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(QmpError::generic(format!("Parameter '{k}' is unexpected"))),
            None => Ok(()),
        }
    }

    /// The raw value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    fn typed<'a, T>(
        &'a self,
        name: &str,
        what: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, QmpError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                QmpError::generic(format!(
                    "Invalid parameter type for '{name}', expected: {what}"
                ))
            }),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, QmpError> {
        self.typed(name, "string", Value::as_str)
    }

    /// A required string.
    pub fn str(&self, name: &str) -> Result<&str, QmpError> {
        self.opt_str(name)?.ok_or_else(|| missing(name))
    }

    /// An optional unsigned integer.
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, QmpError> {
        self.typed(name, "integer", Value::as_u64)
    }

    /// A required unsigned integer.
    pub fn u64(&self, name: &str) -> Result<u64, QmpError> {
        self.opt_u64(name)?.ok_or_else(|| missing(name))
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, QmpError> {
        self.typed(name, "boolean", Value::as_bool)
    }

    /// An optional array.
    pub fn opt_array(&self, name: &str) -> Result<Option<&Vec<Value>>, QmpError> {
        self.typed(name, "array", Value::as_array)
    }

    /// An optional object.
    pub fn opt_object(&self, name: &str) -> Result<Option<Args>, QmpError> {
        self.typed(name, "object", |v| v.as_object().cloned().map(Args))
    }
}

fn missing(name: &str) -> QmpError {
    QmpError::generic(format!("Parameter '{name}' is missing"))
}

/// The greeting a server sends first: the version it claims and its
/// capabilities (none: out-of-band is not offered).
pub fn greeting(major: u64, minor: u64, micro: u64, package: &str) -> Value {
    json!({ "QMP": {
        "version": { "qemu": { "major": major, "minor": minor, "micro": micro },
                     "package": package },
        "capabilities": [] } })
}

/// The answer to a command: `return` or `error`, with the `id` echoed.
pub fn answer(reply: &Result<Value, QmpError>, id: Option<Value>) -> Value {
    let mut msg = match reply {
        Ok(r) => json!({ "return": r }),
        Err(e) => json!({ "error": { "class": e.class.as_str(), "desc": e.desc } }),
    };
    if let Some(id) = id {
        msg["id"] = id;
    }
    msg
}

/// An event with the host's time (`seconds`, `microseconds`).
pub fn event(name: &str, data: Value) -> Value {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = json!({ "seconds": t.as_secs(), "microseconds": t.subsec_micros() });
    if data.as_object().is_some_and(Map::is_empty) || data.is_null() {
        json!({ "event": name, "timestamp": ts })
    } else {
        json!({ "event": name, "data": data, "timestamp": ts })
    }
}

/// A message as it goes on the wire (the reference ends each with CRLF).
pub fn encode(msg: &Value) -> Vec<u8> {
    let mut s = msg.to_string().into_bytes();
    s.extend_from_slice(b"\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> (String, Option<Value>) {
        let (e, id) = Command::parse(s.as_bytes()).expect_err(s);
        assert_eq!(e.class, ErrorClass::GenericError, "{s}");
        (e.desc, id)
    }

    #[test]
    fn commands_are_validated_with_the_references_texts() {
        let c = Command::parse(br#"{"execute":"stop","id":7}"#).unwrap();
        assert_eq!((c.name.as_str(), c.id), ("stop", Some(json!(7))));
        assert_eq!(
            err(r#"{"id":"x"}"#),
            ("QMP input lacks member 'execute'".into(), Some(json!("x")))
        );
        assert_eq!(
            err(r#"{"execute":1}"#).0,
            "QMP input member 'execute' must be a string"
        );
        assert_eq!(
            err(r#"{"execute":"a","arguments":[]}"#).0,
            "QMP input member 'arguments' must be an object"
        );
        assert_eq!(
            err(r#"{"execute":"a","x":1}"#).0,
            "QMP input member 'x' is unexpected"
        );
        assert!(err("[1]").0.contains("must be a JSON object"));
        assert!(err("{nope}").0.starts_with("JSON parse error"));
    }

    #[test]
    fn arguments_are_typed() {
        let c = Command::parse(br#"{"execute":"m","arguments":{"uri":"tcp:h:1","n":3,"b":true}}"#)
            .unwrap();
        let a = &c.args;
        assert_eq!(a.str("uri").unwrap(), "tcp:h:1");
        assert_eq!(a.u64("n").unwrap(), 3);
        assert_eq!(a.opt_bool("b").unwrap(), Some(true));
        assert_eq!(a.str("zz").unwrap_err().desc, "Parameter 'zz' is missing");
        assert_eq!(
            a.str("n").unwrap_err().desc,
            "Invalid parameter type for 'n', expected: string"
        );
        assert_eq!(
            a.only(&["uri", "n"]).unwrap_err().desc,
            "Parameter 'b' is unexpected"
        );
    }

    #[test]
    fn messages() {
        let ok = answer(&Ok(json!({})), Some(json!("a")));
        assert_eq!(ok.to_string(), r#"{"id":"a","return":{}}"#);
        let e = answer(&Err(QmpError::not_found("x")), None);
        assert_eq!(e["error"]["class"], "CommandNotFound");
        let ev = event("STOP", json!({}));
        assert!(ev.get("data").is_none() && ev["timestamp"]["seconds"].is_u64());
        assert!(encode(&ev).ends_with(b"}\r\n"));
    }
}
