//! What a query asks for: the names of code it mentions (`IntoResponse`,
//! `path_router`, `Config::load`, `parseHeaders()`), whether it is a name alone
//! (a symbol query) or a sentence, and its meaningful words, stemmed, for
//! matching against file and folder names.

use rust_stemmers::{Algorithm, Stemmer};

use crate::lexical;

/// A query, analysed once per search.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Analysis {
    /// The query is a name (or a few names), not a sentence.
    pub symbol_query: bool,
    /// Names the query mentions, as written, without qualifiers or `()`.
    pub names: Vec<String>,
    /// Stems of the query's meaningful words and of its names' parts.
    pub stems: Vec<String>,
    /// The query asks for documentation itself (`docs`, `documentation`,
    /// `readme`, `guide`, `tutorial`; not `document`, which in code is often
    /// data: a JSON document).
    pub docs_wanted: bool,
}

/// Words that ask for documentation rather than the code it describes.
const DOCS_WORDS: &[&str] = &[
    "doc",
    "docs",
    "documentation",
    "readme",
    "guide",
    "guides",
    "tutorial",
    "tutorials",
];

/// Words that describe code in general; they say nothing about which file.
const GENERIC: &[&str] = &[
    "function",
    "functions",
    "method",
    "methods",
    "class",
    "classes",
    "code",
    "implementation",
    "implemented",
    "implement",
    "implements",
    "logic",
    "handling",
    "handle",
    "handles",
    "using",
    "used",
    "use",
    "uses",
    "work",
    "works",
    "type",
    "types",
    "value",
    "values",
    "data",
    "support",
    "supports",
    "called",
    "defined",
    "define",
    "defines",
];

/// Analyses `query`.
pub(super) fn analyse(query: &str) -> Analysis {
    let stemmer = Stemmer::create(Algorithm::English);
    let tokens: Vec<&str> = query.split_whitespace().collect();
    let mut names: Vec<String> = Vec::new();
    let mut sentence_words = 0usize;
    for (i, raw) in tokens.iter().enumerate() {
        let token = raw.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
        if token.is_empty() {
            continue;
        }
        match name_in(token, i == 0, tokens.len()) {
            Some(name) => {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            None => sentence_words += 1,
        }
    }
    let symbol_query = !names.is_empty() && sentence_words == 0;
    let mut stems: Vec<String> = Vec::new();
    let mut add = |w: &str| {
        if w.chars().count() < 2 || GENERIC.contains(&w) {
            return;
        }
        let s = stemmer.stem(w).into_owned();
        if !stems.contains(&s) {
            stems.push(s);
        }
    };
    let mut docs_wanted = false;
    for w in lexical::content_words(query) {
        docs_wanted |= DOCS_WORDS.contains(&w.as_str());
        for part in lexical::identifier_parts(&w) {
            add(&part);
        }
    }
    for n in &names {
        for part in lexical::identifier_parts(n) {
            add(&part);
        }
    }
    Analysis {
        symbol_query,
        names,
        stems,
        docs_wanted,
    }
}

/// Stems of the identifier parts of `text` (a file stem, a folder name).
pub(super) fn stems_of(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    lexical::identifier_parts(text)
        .into_iter()
        .map(|p| stemmer.stem(&p).into_owned())
        .collect()
}

/// The name a query token stands for, if it looks like code: qualified
/// (`Type::method`, `Class.method`: the last part), snake_case, camelCase or
/// PascalCase with more than one hump, a call (`parse()`), or any one word a
/// query consists of alone. A capitalised word inside a sentence (`Session`)
/// counts too: prose capitalises its first word, code its type names.
fn name_in(token: &str, first: bool, tokens: usize) -> Option<String> {
    let last = token
        .rsplit("::")
        .next()
        .unwrap_or(token)
        .rsplit('.')
        .next()
        .unwrap_or(token)
        .trim_end_matches("()");
    let qualified = last.len() < token.len() && !last.is_empty();
    let alpha = last.chars().any(char::is_alphabetic);
    if !alpha || last.chars().count() < 2 {
        return None;
    }
    let snake = last.contains('_') && last.trim_matches('_').contains(|c: char| c.is_alphabetic());
    let chars: Vec<char> = last.chars().collect();
    let humps = chars
        .windows(2)
        .filter(|w| w[0].is_lowercase() && w[1].is_uppercase())
        .count();
    let upper_inside = chars.iter().skip(1).any(|c| c.is_uppercase());
    let camel = humps >= 1 || (chars[0].is_uppercase() && upper_inside && chars.len() > 2);
    let capitalised = chars[0].is_uppercase() && !first;
    let alone = tokens == 1;
    (qualified || snake || camel || capitalised || alone).then(|| last.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_inside_sentences_are_found() {
        let a = analyse("how IntoResponse converts handler return values to HTTP responses");
        assert_eq!(a.names, ["IntoResponse", "HTTP"]);
        assert!(!a.symbol_query);
        let a = analyse("Router path_router implementation for storing and matching routes");
        assert_eq!(a.names, ["path_router"]);
        let a = analyse("how the Session manages the underlying URLSession");
        assert_eq!(a.names, ["Session", "URLSession"]);
    }

    #[test]
    fn a_name_alone_is_a_symbol_query() {
        for q in [
            "parseConfig",
            "Config::load",
            "serde_json::from_str",
            "Foo.bar()",
            "retry",
        ] {
            let a = analyse(q);
            assert!(a.symbol_query, "{q}");
            assert_eq!(a.names.len(), 1, "{q}");
        }
        assert_eq!(analyse("Config::load").names, ["load"]);
        assert!(!analyse("parse the config file").symbol_query);
    }

    #[test]
    fn stems_match_file_names_split_like_identifiers() {
        let a = analyse("how request retrying is implemented with backoff");
        let file = stems_of("RetryPolicy");
        assert!(
            a.stems.iter().any(|s| file.contains(s)),
            "{:?} {file:?}",
            a.stems
        );
        assert!(!a.stems.contains(&"implement".to_owned()));
        assert_eq!(stems_of("path_router"), ["path", "router"]);
    }
}
