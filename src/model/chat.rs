//! A checkpoint's own chat template, rendered as transformers renders it: Jinja with
//! `trim_blocks` and `lstrip_blocks`, loop controls, Python's string methods, `tojson` and
//! `raise_exception`. The template is read from `chat_template.jinja`, `chat_template.json` or
//! the `chat_template` of `tokenizer_config.json`, in that order, as transformers looks.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind};
use serde_json::{json, Value};

use super::ModelError;

#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    /// `bos_token` / `eos_token` of `tokenizer_config.json`, which templates may print.
    specials: Value,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("chars", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    pub fn new(source: impl Into<String>) -> Result<Self, ModelError> {
        let t = ChatTemplate {
            source: source.into(),
            specials: json!({}),
        };
        // Fail on load, naming the file, rather than on the first prompt.
        t.env()
            .template_from_str(&t.source)
            .map_err(|e| ModelError::Tokenizer(format!("chat template: {e:#}")))?;
        Ok(t)
    }

    /// The template of a checkpoint directory, if it has one.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, ModelError> {
        let read = |name: &str| -> Result<Option<String>, ModelError> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ModelError::io(&p, e)),
            }
        };
        let parse = |name: &str, text: &str| -> Result<Value, ModelError> {
            serde_json::from_str(text).map_err(|e| ModelError::Config {
                path: dir.join(name),
                message: e.to_string(),
            })
        };
        let tok_cfg = match read("tokenizer_config.json")? {
            Some(t) => parse("tokenizer_config.json", &t)?,
            None => Value::Null,
        };
        let source = if let Some(s) = read("chat_template.jinja")? {
            Some(s)
        } else if let Some(t) = read("chat_template.json")? {
            template_field(&parse("chat_template.json", &t)?)
        } else {
            template_field(&tok_cfg)
        };
        let Some(source) = source else {
            return Ok(None);
        };
        let mut t = Self::new(source)?;
        let special = |k: &str| match tok_cfg.get(k) {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Object(o)) => o.get("content").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        t.specials = json!({"bos_token": special("bos_token"), "eos_token": special("eos_token")});
        Ok(Some(t))
    }

    fn env(&self) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<(), Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env
    }

    /// The text of `messages` (`[{role, content}]`, content a string or a list of `{type:
    /// "image"}` and `{type: "text", text}` parts), with the assistant's header appended when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let env = self.env();
        let tmpl = env
            .template_from_str(&self.source)
            .map_err(|e| ModelError::Tokenizer(format!("chat template: {e:#}")))?;
        let mut ctx = json!({
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
        });
        if let (Some(c), Some(s)) = (ctx.as_object_mut(), self.specials.as_object()) {
            c.extend(s.clone());
        }
        tmpl.render(ctx)
            .map_err(|e| ModelError::Tokenizer(format!("chat template: {e:#}")))
    }
}

/// `chat_template` as a string, or the `default` of a list of named templates.
fn template_field(v: &Value) -> Option<String> {
    match v.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Jinja that Qwen's newer templates lean on: whitespace control, namespaces, Python
    /// string methods, reversed slices, `tojson`, and `raise_exception` as an error.
    #[test]
    fn renders_what_qwen_templates_use() {
        let t = ChatTemplate::new(
            "{%- set ns = namespace(last=-1) %}\n\
             {%- for m in messages[::-1] %}{% if m.role == 'user' and ns.last == -1 %}\
             {% set ns.last = messages|length - 1 - loop.index0 %}{% endif %}{% endfor %}\n\
             {%- for m in messages %}\n\
               {%- if m.content is string %}{% set c = m.content %}\
               {%- else %}{% set c = m.content|map(attribute='type')|join(',') %}{% endif %}\n\
               <|im_start|>{{ m.role }}\n{{ c.split('</think>')[-1].lstrip('\\n').strip() }}\
               {%- if loop.index0 == ns.last %} (last user){% endif %}<|im_end|>\n\
             {%- endfor %}\n\
             {%- if add_generation_prompt %}<|im_start|>assistant {{ {'a': 1}|tojson }}\n{% endif %}",
        )
        .unwrap();
        let messages = json!([
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "<think>\nhmm</think>\n  3  "},
            {"role": "user", "content": "and 4?"},
        ]);
        assert_eq!(
            t.render(&messages, true).unwrap(),
            "<|im_start|>user\nimage,text<|im_end|>\
             <|im_start|>assistant\n3<|im_end|>\
             <|im_start|>user\nand 4? (last user)<|im_end|>\
             <|im_start|>assistant {\"a\":1}\n"
        );
        let failing =
            ChatTemplate::new("{{ raise_exception('System role not supported') }}").unwrap();
        let err = failing.render(&messages, true).unwrap_err().to_string();
        assert!(err.contains("System role not supported"), "{err}");
        assert!(ChatTemplate::new("{% for %}").is_err());
    }
}
