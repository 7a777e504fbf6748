//! Which language a file is in, and what the chunker knows about it.

use tree_sitter::Language;

/// A language the chunker recognises.
#[derive(Debug)]
pub struct Lang {
    /// Name in `Hit.language`, e.g. `rust`, `tsx`, `markdown`.
    pub name: &'static str,
    /// File extensions, lowercase, without the dot.
    pub extensions: &'static [&'static str],
    /// Grammar and definitions query, for languages parsed into entities.
    pub grammar: Option<Grammar>,
}

/// A tree-sitter grammar with the query that finds its definitions.
#[derive(Debug)]
pub struct Grammar {
    /// The tree-sitter language.
    pub language: fn() -> Language,
    /// Source of `queries/<lang>.scm`.
    pub query: &'static str,
    /// Joins a scope's name and a member's name: `::` (Rust, C++) or `.`.
    pub separator: &'static str,
    /// Line prefixes (after indentation) that attach to the next definition:
    /// doc comments, attributes, decorators.
    pub leading: &'static [&'static str],
    /// Consecutive functions of one name are clauses of one definition (a Haskell
    /// signature and its equations, Elixir's `def` clauses) and merge into one.
    pub clauses: bool,
}

const C_LEADING: &[&str] = &["//", "/*", "*"];
const JVM_LEADING: &[&str] = &["//", "/*", "*", "@"];

/// Every language, parsed ones first.
pub static LANGS: &[Lang] = &[
    Lang {
        name: "rust",
        extensions: &["rs"],
        grammar: Some(Grammar {
            language: || tree_sitter_rust::LANGUAGE.into(),
            query: include_str!("queries/rust.scm"),
            separator: "::",
            leading: &["//", "/*", "*", "#["],
            clauses: false,
        }),
    },
    Lang {
        name: "python",
        extensions: &["py", "pyi", "pyw"],
        grammar: Some(Grammar {
            language: || tree_sitter_python::LANGUAGE.into(),
            query: include_str!("queries/python.scm"),
            separator: ".",
            leading: &["#", "@"],
            clauses: false,
        }),
    },
    Lang {
        name: "javascript",
        extensions: &["js", "mjs", "cjs", "jsx"],
        grammar: Some(Grammar {
            language: || tree_sitter_javascript::LANGUAGE.into(),
            query: include_str!("queries/javascript.scm"),
            separator: ".",
            leading: &["//", "/*", "*", "@"],
            clauses: false,
        }),
    },
    Lang {
        name: "typescript",
        extensions: &["ts", "mts", "cts"],
        grammar: Some(Grammar {
            language: || tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            query: include_str!("queries/typescript.scm"),
            separator: ".",
            leading: &["//", "/*", "*", "@"],
            clauses: false,
        }),
    },
    Lang {
        name: "tsx",
        extensions: &["tsx"],
        grammar: Some(Grammar {
            language: || tree_sitter_typescript::LANGUAGE_TSX.into(),
            query: include_str!("queries/typescript.scm"),
            separator: ".",
            leading: &["//", "/*", "*", "@"],
            clauses: false,
        }),
    },
    Lang {
        name: "go",
        extensions: &["go"],
        grammar: Some(Grammar {
            language: || tree_sitter_go::LANGUAGE.into(),
            query: include_str!("queries/go.scm"),
            separator: ".",
            leading: &["//"],
            clauses: false,
        }),
    },
    Lang {
        name: "java",
        extensions: &["java"],
        grammar: Some(Grammar {
            language: || tree_sitter_java::LANGUAGE.into(),
            query: include_str!("queries/java.scm"),
            separator: ".",
            leading: &["//", "/*", "*", "@"],
            clauses: false,
        }),
    },
    Lang {
        name: "c",
        extensions: &["c", "h"],
        grammar: Some(Grammar {
            language: || tree_sitter_c::LANGUAGE.into(),
            query: include_str!("queries/c.scm"),
            separator: "::",
            leading: C_LEADING,
            clauses: false,
        }),
    },
    Lang {
        name: "cpp",
        extensions: &["cc", "cpp", "cxx", "c++", "hpp", "hh", "hxx", "h++", "ipp"],
        grammar: Some(Grammar {
            language: || tree_sitter_cpp::LANGUAGE.into(),
            query: include_str!("queries/cpp.scm"),
            separator: "::",
            leading: &["//", "/*", "*", "template"],
            clauses: false,
        }),
    },
    Lang {
        name: "ruby",
        extensions: &["rb", "rake", "gemspec"],
        grammar: Some(Grammar {
            language: || tree_sitter_ruby::LANGUAGE.into(),
            query: include_str!("queries/ruby.scm"),
            separator: ".",
            leading: &["#"],
            clauses: false,
        }),
    },
    Lang {
        name: "csharp",
        extensions: &["cs"],
        grammar: Some(Grammar {
            language: || tree_sitter_c_sharp::LANGUAGE.into(),
            query: include_str!("queries/csharp.scm"),
            separator: ".",
            leading: &["///", "//", "[", "/*", "*"],
            clauses: false,
        }),
    },
    Lang {
        name: "php",
        extensions: &["php"],
        grammar: Some(Grammar {
            language: || tree_sitter_php::LANGUAGE_PHP.into(),
            query: include_str!("queries/php.scm"),
            separator: ".",
            leading: &["/**", "*", "//", "#["],
            clauses: false,
        }),
    },
    Lang {
        name: "kotlin",
        extensions: &["kt", "kts"],
        grammar: Some(Grammar {
            language: || tree_sitter_kotlin_ng::LANGUAGE.into(),
            query: include_str!("queries/kotlin.scm"),
            separator: ".",
            leading: JVM_LEADING,
            clauses: false,
        }),
    },
    Lang {
        name: "swift",
        extensions: &["swift"],
        grammar: Some(Grammar {
            language: || tree_sitter_swift::LANGUAGE.into(),
            query: include_str!("queries/swift.scm"),
            separator: ".",
            leading: JVM_LEADING,
            clauses: false,
        }),
    },
    Lang {
        name: "scala",
        extensions: &["scala", "sc"],
        grammar: Some(Grammar {
            language: || tree_sitter_scala::LANGUAGE.into(),
            query: include_str!("queries/scala.scm"),
            separator: ".",
            leading: JVM_LEADING,
            clauses: false,
        }),
    },
    Lang {
        name: "elixir",
        extensions: &["ex", "exs"],
        grammar: Some(Grammar {
            language: || tree_sitter_elixir::LANGUAGE.into(),
            query: include_str!("queries/elixir.scm"),
            separator: ".",
            leading: &["@doc", "@moduledoc", "@spec", "#", "@"],
            clauses: true,
        }),
    },
    Lang {
        name: "haskell",
        extensions: &["hs"],
        grammar: Some(Grammar {
            language: || tree_sitter_haskell::LANGUAGE.into(),
            query: include_str!("queries/haskell.scm"),
            separator: ".",
            leading: &["--", "{-"],
            clauses: true,
        }),
    },
    Lang {
        name: "lua",
        extensions: &["lua"],
        grammar: Some(Grammar {
            language: || tree_sitter_lua::LANGUAGE.into(),
            query: include_str!("queries/lua.scm"),
            separator: ".",
            leading: &["--"],
            clauses: false,
        }),
    },
    Lang {
        name: "zig",
        extensions: &["zig"],
        grammar: Some(Grammar {
            language: || tree_sitter_zig::LANGUAGE.into(),
            query: include_str!("queries/zig.scm"),
            separator: ".",
            leading: &["///", "//"],
            clauses: false,
        }),
    },
    Lang {
        name: "bash",
        extensions: &["sh", "bash", "bats"],
        grammar: Some(Grammar {
            language: || tree_sitter_bash::LANGUAGE.into(),
            query: include_str!("queries/bash.scm"),
            separator: ".",
            leading: &["#"],
            clauses: false,
        }),
    },
    Lang {
        name: "markdown",
        extensions: &["md", "markdown", "mdx", "rst", "adoc"],
        grammar: None,
    },
    Lang {
        name: "yaml",
        extensions: &["yaml", "yml"],
        grammar: None,
    },
    Lang {
        name: "toml",
        extensions: &["toml"],
        grammar: None,
    },
    Lang {
        name: "json",
        extensions: &["json", "jsonc"],
        grammar: None,
    },
    Lang {
        // The bash grammar loses whole functions to zsh's parameter flags
        // (`${(j:,:)parts}`) and glob qualifiers, so zsh stays windows.
        name: "shell",
        extensions: &["zsh", "fish"],
        grammar: None,
    },
    Lang {
        name: "sql",
        extensions: &["sql"],
        grammar: None,
    },
    Lang {
        name: "html",
        extensions: &["html", "htm", "xml", "svg", "vue", "svelte"],
        grammar: None,
    },
    Lang {
        name: "css",
        extensions: &["css", "scss", "sass", "less"],
        grammar: None,
    },
];

/// Plain text: anything without a known extension.
pub(super) static TEXT: Lang = Lang {
    name: "text",
    extensions: &[],
    grammar: None,
};

/// The language of a path, by extension (`Makefile`-style names are text).
pub fn detect(path: &str) -> &'static Lang {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((_, ext)) = name.rsplit_once('.') else {
        return &TEXT;
    };
    let ext = ext.to_ascii_lowercase();
    LANGS
        .iter()
        .find(|l| l.extensions.contains(&ext.as_str()))
        .unwrap_or(&TEXT)
}
