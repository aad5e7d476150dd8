//! The command lines of the runtime's binaries (a board, the generic board, the probe), parsed
//! in one place with lexopt: `COMMAND [--option VALUE]...`.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::PathBuf;

/// A parsed command line: the command and the options given, by name (without `--`).
#[derive(Debug)]
pub struct Args {
    pub command: String,
    values: Vec<(String, String)>,
}

impl Args {
    /// Parse this process's arguments. `commands` are the commands the binary knows, `options`
    /// the option names it takes (each with a value); `usage` ends every error.
    pub fn parse(usage: &str, commands: &[&str], options: &[&str]) -> Result<Args> {
        Args::parse_from(std::env::args_os().skip(1), usage, commands, options)
    }

    pub fn parse_from(args: impl IntoIterator<Item = impl Into<OsString>>, usage: &str, commands: &[&str], options: &[&str]) -> Result<Args> {
        let mut p = lexopt::Parser::from_iter(std::iter::once(OsString::from("bin")).chain(args.into_iter().map(Into::into)));
        let mut command = None;
        let mut values = Vec::new();
        let bad = |what: String| -> anyhow::Error { anyhow::anyhow!("{what}\nusage: {usage}") };
        while let Some(arg) = p.next().map_err(|e| bad(e.to_string()))? {
            match arg {
                lexopt::Arg::Long(name) if options.contains(&name) => {
                    let name = name.to_string();
                    let value = p.value().map_err(|e| bad(e.to_string()))?.into_string().map_err(|v| bad(format!("--{name}: '{}' is not UTF-8", v.to_string_lossy())))?;
                    values.push((name, value));
                }
                lexopt::Arg::Value(v) if command.is_none() => {
                    let v = v.into_string().map_err(|v| bad(format!("'{}' is not UTF-8", v.to_string_lossy())))?;
                    if !commands.contains(&v.as_str()) {
                        return Err(bad(format!("unknown command '{v}'")));
                    }
                    command = Some(v);
                }
                other => return Err(bad(other.unexpected().to_string())),
            }
        }
        match command {
            Some(command) => Ok(Args { command, values }),
            None => bail!("usage: {usage}"),
        }
    }

    /// The value of `--name`, the last one if given more than once.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// The value of `--name`, which `command` needs.
    pub fn required(&self, name: &str) -> Result<&str> {
        self.get(name).with_context(|| format!("{} needs --{name}", self.command))
    }

    /// `--name` parsed as a number, if given.
    pub fn number(&self, name: &str) -> Result<Option<f64>> {
        self.get(name).map(|v| v.parse::<f64>().with_context(|| format!("--{name}: '{v}' is not a number"))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = "board serve [--listen ADDR] [--model FILE] | info";

    fn parse(args: &[&str]) -> Result<Args> {
        Args::parse_from(args.iter().copied(), USAGE, &["serve", "info"], &["listen", "model"])
    }

    #[test]
    fn a_command_and_its_options() {
        let a = parse(&["serve", "--model", "m.bin", "--listen=0.0.0.0:1"]).unwrap();
        assert_eq!(a.command, "serve");
        assert_eq!(a.get("model"), Some("m.bin"));
        assert_eq!(a.get("listen"), Some("0.0.0.0:1"));
        assert_eq!(a.get("plan"), None);
        assert!(a.required("plan").unwrap_err().to_string().contains("serve needs --plan"));
    }

    #[test]
    fn unknown_input_is_refused_with_the_usage() {
        for bad in [&["serve", "--plan", "p.json"][..], &["serve", "extra"], &["start"], &[], &["serve", "--model"]] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains("usage: board serve"), "{bad:?}: {e}");
        }
    }
}
