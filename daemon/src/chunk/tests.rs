//! Chunker tests: a source text in, a rendered chunk list out.

use super::*;

/// One line per chunk: `start-end kind symbol`.
fn render(path: &str, text: &str) -> String {
    let chunker = Chunker::new().unwrap();
    chunker
        .chunk(path, text, &ChunkOptions::default())
        .iter()
        .map(|c| {
            format!(
                "{}-{} {} {}",
                c.start_line,
                c.end_line,
                c.kind,
                c.symbol.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
fn check(path: &str, text: &str, expect: &str) {
    let got = render(path, text);
    let want = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got, want, "\n--- got ---\n{got}\n--- want ---\n{want}\n");
}

#[test]
fn every_query_compiles() {
    Chunker::new().unwrap();
    for l in LANGS.iter().filter(|l| l.grammar.is_some()) {
        // Each grammar parses an empty file without a chunk.
        assert_eq!(
            render(&format!("x.{}", l.extensions[0]), ""),
            "",
            "{}",
            l.name
        );
    }
}

#[test]
fn rust() {
    check(
        "src/lib.rs",
        r#"use std::fmt;

/// A parser.
#[derive(Debug)]
pub struct Parser {
    pos: usize,
}

impl Parser {
    /// Makes one.
    pub fn new() -> Self {
        Self { pos: 0 }
    }

    pub fn parse(&mut self) -> bool {
        fn helper() {}
        true
    }
}

impl fmt::Display for Parser {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "p")
    }
}

pub trait Visit {
    fn visit(&self);
}

mod inner {
    pub enum Mode { A, B }
}

macro_rules! twice { ($e:expr) => { $e; $e } }
"#,
        "
        1-1 window -
        3-7 struct Parser
        9-9 impl impl Parser
        10-13 method impl Parser::new
        15-18 method impl Parser::parse
        21-21 impl impl fmt::Display for Parser
        22-24 method impl fmt::Display for Parser::fmt
        27-27 trait Visit
        28-28 method Visit::visit
        31-31 module inner
        32-32 enum inner::Mode
        35-35 macro twice
        ",
    );
}

#[test]
fn python() {
    check(
        "pkg/config.py",
        r#"import os

TIMEOUT = 3


class Config(dict):
    """Settings."""

    default = None

    @classmethod
    def from_pyfile(cls, name):
        def inner():
            pass
        return cls()

    def get(self, key):
        return self[key]


@cache
def load(path):
    return open(path).read()
"#,
        "
        1-3 window -
        6-9 class Config
        11-15 method Config.from_pyfile
        17-18 method Config.get
        21-23 function load
        ",
    );
}

#[test]
fn javascript_and_typescript() {
    let js = r#"const x = require("x");

// Adds.
function add(a, b) {
  return a + b;
}

const mul = (a, b) => a * b;

class Stack {
  push(v) {
    this.items.push(v);
  }
}
"#;
    check(
        "lib/math.js",
        js,
        "
        1-1 window -
        3-6 function add
        8-8 function mul
        10-10 class Stack
        11-13 method Stack.push
        ",
    );
    let ts = r#"export interface Shape {
  area(): number;
}

export type Id = string;

export enum Color { Red, Green }

export class Circle implements Shape {
  constructor(private r: number) {}

  area(): number {
    return Math.PI * this.r ** 2;
  }
}

namespace Geometry {
  export function unit(): Circle {
    return new Circle(1);
  }
}
"#;
    let expect = "
        1-3 interface Shape
        5-5 type Id
        7-7 enum Color
        9-9 class Circle
        10-10 method Circle.constructor
        12-14 method Circle.area
        17-17 module Geometry
        18-20 function Geometry.unit
        ";
    check("src/shape.ts", ts, expect);
    check("src/shape.tsx", ts, expect);
}

#[test]
fn go() {
    check(
        "server.go",
        r#"package server

// Server serves.
type Server struct {
	addr string
}

type Handler interface {
	Serve()
}

func (s *Server) Start() error {
	return nil
}

func New(addr string) *Server {
	return &Server{addr: addr}
}
"#,
        "
        1-1 window -
        3-6 struct Server
        8-10 interface Handler
        12-14 method Server.Start
        16-18 function New
        ",
    );
}

#[test]
fn java() {
    check(
        "src/Main.java",
        r#"package demo;

public class Main {
    private int n;

    public Main(int n) {
        this.n = n;
    }

    /** Runs. */
    @Override
    public void run() {
        System.out.println(n);
    }

    interface Listener {
        void on();
    }
}
"#,
        "
        1-1 window -
        3-4 class Main
        6-8 method Main.Main
        10-14 method Main.run
        16-16 interface Main.Listener
        17-17 method Main.Listener.on
        ",
    );
}

#[test]
fn c_and_cpp() {
    check(
        "src/buf.c",
        r#"#include <stdlib.h>

struct buf {
    char *data;
};

/* Allocates. */
static struct buf *buf_new(size_t n) {
    return malloc(n);
}

int main(void) {
    return 0;
}
"#,
        "
        1-1 window -
        3-5 struct buf
        7-10 function buf_new
        12-14 function main
        ",
    );
    check(
        "src/vec.cpp",
        r#"namespace geo {

class Vec {
public:
    double len() const {
        return 0.0;
    }
};

}

double geo::norm(const Vec& v) {
    return v.len();
}
"#,
        "
        1-1 module geo
        3-4 class geo::Vec
        5-7 method geo::Vec::len
        12-14 function geo::norm
        ",
    );
}

#[test]
fn ruby() {
    check(
        "lib/greeter.rb",
        r#"require "set"

module Greet
  # A greeter.
  class Greeter
    def hello(name)
      "hi #{name}"
    end

    def self.build
      new
    end
  end
end
"#,
        "
        1-1 window -
        3-3 module Greet
        4-5 class Greet.Greeter
        6-8 method Greet.Greeter.hello
        10-12 method Greet.Greeter.build
        ",
    );
}

#[test]
fn other_files_become_windows() {
    let md = (1..=130)
        .map(|i| format!("line {i}"))
        .collect::<Vec<_>>()
        .join("\n");
    check(
        "docs/guide.md",
        &md,
        "
        1-60 window -
        58-117 window -
        115-130 window -
        ",
    );
    check("Makefile", "all:\n\tcargo build\n", "1-2 window -");
    check("empty.toml", "\n\n   \n", "");
}

#[test]
fn large_entities_split_into_windows_that_keep_the_symbol() {
    let body: String = (0..200)
        .map(|i| format!("    let value_{i} = compute_something({i});\n"))
        .collect();
    let text = format!("fn big() {{\n{body}}}\n");
    let chunker = Chunker::new().unwrap();
    let chunks = chunker.chunk("big.rs", &text, &ChunkOptions::default());
    assert!(chunks.len() > 3, "{}", chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.symbol.as_deref(), Some("big"));
        assert_eq!(c.kind, Kind::Function);
        assert!(c.text.len() <= ChunkOptions::default().max_chars + 100);
        if i > 0 {
            // Later windows carry the signature and overlap the previous one.
            assert!(c.text.starts_with("fn big() {\n"), "{}", c.text);
            assert!(c.start_line <= chunks[i - 1].end_line);
        }
    }
    assert_eq!(chunks.last().unwrap().end_line, 202);
}

#[test]
fn embedded_text_carries_the_scope_but_not_the_path() {
    let chunker = Chunker::new().unwrap();
    let text = "class Config:\n    def load(self):\n        return 1\n";
    let a = chunker.chunk("a/config.py", text, &ChunkOptions::default());
    let b = chunker.chunk("b/renamed.py", text, &ChunkOptions::default());
    assert_eq!(a, b);
    let method = a.iter().find(|c| c.kind == Kind::Method).unwrap();
    assert_eq!(
        method.text,
        "class Config:\n    def load(self):\n        return 1"
    );
}
