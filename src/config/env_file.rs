//! Reading an environment file the way systemd's `EnvironmentFile=` does, so that a command
//! run by hand sees exactly the variables the service sees: no shell, so `&`, `$` and spaces
//! in a value are kept as written.

/// The assignments of the environment file at `path` (see [`parse_env_file`]), read with the
/// bound of [`super::ENV_FILE_LIMIT`]. The error says what is wrong, not which file: the
/// caller names it.
pub fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text =
        super::file::read_text(path, super::file::ENV_FILE_LIMIT).map_err(|e| e.to_string())?;
    parse_env_file(&text)
}

/// The `KEY=VALUE` assignments of an environment file, in order. Blank lines and lines
/// starting with `#` or `;` are skipped; whitespace around the key and the value is trimmed;
/// a value wholly in single quotes is taken literally, one in double quotes with `\"`, `\\`,
/// `\$` and `` \` `` unescaped; a line ending in `\` continues on the next. A line that is not
/// an assignment is an error naming its number (never its text, which may hold a password).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut assignments = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        let mut line = line.to_owned();
        while line.ends_with('\\') && !line.trim_start().starts_with(['#', ';']) {
            line.pop();
            match lines.next() {
                Some((_, next)) => line.push_str(next),
                None => break,
            }
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(format!("line {number} is not a KEY=VALUE assignment"));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!(
                "line {number}: the variable name is not valid (letters, digits and _)"
            ));
        }
        let value =
            unquote(value.trim()).ok_or_else(|| format!("line {number}: a quote is left open"))?;
        assignments.push((key.to_owned(), value));
    }
    Ok(assignments)
}

fn unquote(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'\'') => (value.len() >= 2 && value.ends_with('\''))
            .then(|| value[1..value.len() - 1].to_owned()),
        Some(b'"') => {
            if value.len() < 2 || !value.ends_with('"') {
                return None;
            }
            let inner = &value[1..value.len() - 1];
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some(escaped @ ('"' | '\\' | '$' | '`')) => out.push(escaped),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => out.push('\\'),
                    }
                } else {
                    out.push(c);
                }
            }
            Some(out)
        }
        _ => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ampersand_in_a_url_is_kept_as_systemd_keeps_it() {
        let parsed = parse_env_file(
            "# comment\n; another\n\nDATABASE_URL=postgres://u:p@h/db?sslmode=disable&application_name=x\n",
        )
        .unwrap();
        assert_eq!(
            parsed,
            [(
                "DATABASE_URL".to_owned(),
                "postgres://u:p@h/db?sslmode=disable&application_name=x".to_owned()
            )]
        );
    }

    #[test]
    fn quotes_are_removed_and_double_quoted_escapes_read() {
        let parsed =
            parse_env_file("A = 'x $y & z'\nB=\"say \\\"hi\\\" \\\\ $z\"\nC=plain value  \n")
                .unwrap();
        assert_eq!(parsed[0], ("A".to_owned(), "x $y & z".to_owned()));
        assert_eq!(parsed[1], ("B".to_owned(), "say \"hi\" \\ $z".to_owned()));
        assert_eq!(parsed[2], ("C".to_owned(), "plain value".to_owned()));
    }

    #[test]
    fn a_backslash_continues_the_line() {
        let parsed = parse_env_file("A=one\\\ntwo\n").unwrap();
        assert_eq!(parsed, [("A".to_owned(), "onetwo".to_owned())]);
    }

    #[test]
    fn a_bad_line_is_named_by_number_without_its_text() {
        let error = parse_env_file("A=1\nsecret-password-here\n").unwrap_err();
        assert_eq!(error, "line 2 is not a KEY=VALUE assignment");
        let error = parse_env_file("1A=x").unwrap_err();
        assert!(error.starts_with("line 1:"), "{error}");
        let error = parse_env_file("A=\"open").unwrap_err();
        assert_eq!(error, "line 1: a quote is left open");
    }
}
