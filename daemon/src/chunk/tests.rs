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
fn csharp() {
    check(
        "src/Shapes.cs",
        r#"using System;

namespace Geo.Shapes
{
    /// <summary>A circle.</summary>
    [Serializable]
    public class Circle : IShape
    {
        private double r;

        public Circle(double r) { this.r = r; }

        public double Radius
        {
            get { return r; }
        }

        public int Id { get; set; }

        /// Its area.
        public double Area()
        {
            return Math.PI * r * r;
        }
    }

    public interface IShape
    {
        double Area();
    }

    public struct Point { public int X; }

    public enum Color { Red, Green }

    public record Pair(int A, int B);
}
"#,
        "
        1-1 window -
        3-4 module Geo.Shapes
        5-9 class Geo.Shapes.Circle
        11-11 method Geo.Shapes.Circle.Circle
        13-16 method Geo.Shapes.Circle.Radius
        18-18 class Geo.Shapes.Circle
        20-24 method Geo.Shapes.Circle.Area
        27-28 interface Geo.Shapes.IShape
        29-29 method Geo.Shapes.IShape.Area
        32-32 struct Geo.Shapes.Point
        34-34 enum Geo.Shapes.Color
        36-36 class Geo.Shapes.Pair
        ",
    );
}

#[test]
fn php() {
    check(
        "src/Greeter.php",
        r#"<?php

namespace App;

/**
 * Greets.
 */
#[Attribute]
class Greeter implements Hello
{
    private string $name;

    /** Says hello. */
    public function greet(string $who): string
    {
        return "hi $who";
    }
}

interface Hello
{
    public function greet(string $who): string;
}

trait Loud
{
    public function shout(): void {}
}

enum Suit { case Hearts; }

function helper(): int
{
    return 1;
}
"#,
        "
        1-3 window -
        5-11 class Greeter
        13-17 method Greeter.greet
        20-21 interface Hello
        22-22 method Hello.greet
        25-26 trait Loud
        27-27 method Loud.shout
        30-30 enum Suit
        32-35 function helper
        ",
    );
}

#[test]
fn kotlin() {
    check(
        "src/main/kotlin/Shapes.kt",
        r#"package geo

import kotlin.math.PI

/** A circle. */
@JvmInline
class Circle(val r: Double) : Shape {
    override fun area(): Double = PI * r * r

    companion object {
        fun unit() = Circle(1.0)
    }
}

interface Shape {
    fun area(): Double
}

enum class Color { RED, GREEN }

object Registry {
    fun register(s: Shape) {
        println(s)
    }
}

typealias Shapes = List<Shape>

fun String.shout(): String = uppercase()

fun main() {
    println(Circle(2.0).area())
}
"#,
        "
        1-3 window -
        5-7 class Circle
        8-8 method Circle.area
        10-10 class Circle
        11-11 method Circle.unit
        15-15 interface Shape
        16-16 method Shape.area
        19-19 enum Color
        21-21 class Registry
        22-24 method Registry.register
        27-27 type Shapes
        29-29 function shout
        31-33 function main
        ",
    );
}

#[test]
fn swift() {
    check(
        "Sources/Geo/Shapes.swift",
        r#"import Foundation

/// Something with an area.
protocol Shape {
    func area() -> Double
}

@MainActor
final class Circle: Shape {
    let r: Double

    init(r: Double) {
        self.r = r
    }

    // The area.
    func area() -> Double {
        return Double.pi * r * r
    }
}

struct Point {
    var x: Int
}

enum Color {
    case red, green
}

extension Point {
    func moved() -> Point {
        return Point(x: x + 1)
    }
}

typealias Points = [Point]

func main() {
    print(Circle(r: 1).area())
}
"#,
        "
        1-1 window -
        3-4 interface Shape
        5-5 method Shape.area
        8-10 class Circle
        12-14 method Circle.init
        16-19 method Circle.area
        22-24 struct Point
        26-28 enum Color
        30-30 impl impl Point
        31-33 method impl Point.moved
        36-36 type Points
        38-40 function main
        ",
    );
}

#[test]
fn scala() {
    check(
        "src/main/scala/Shapes.scala",
        r#"package geo

import scala.math.Pi

/** Something with an area. */
trait Shape {
  def area: Double
}

case class Circle(r: Double) extends Shape {
  // The area.
  @inline
  def area: Double = Pi * r * r
}

object Circle {
  def unit(): Circle = Circle(1)
}

enum Color {
  case Red, Green
}

type Shapes = List[Shape]

def main(): Unit =
  println(Circle(2).area)
"#,
        "
        1-3 window -
        5-6 trait Shape
        7-7 method Shape.area
        10-10 class Circle
        11-13 method Circle.area
        16-16 class Circle
        17-17 method Circle.unit
        20-22 enum Color
        24-24 type Shapes
        26-27 function main
        ",
    );
}

#[test]
fn elixir() {
    check(
        "lib/geo/shapes.ex",
        r#"defmodule Geo.Shapes do
  @moduledoc """
  Shapes.
  """

  alias Geo.Point

  @doc "The area."
  @spec area(term) :: float
  def area({:circle, r}), do: :math.pi() * r * r
  def area({:square, s}), do: s * s

  defp helper(x) when is_integer(x) do
    x + 1
  end

  defmacro twice(expr) do
    quote do: unquote(expr) * 2
  end
end

defprotocol Geo.Size do
  def size(shape)
end

defimpl Geo.Size, for: Geo.Point do
  def size(_point), do: 0
end
"#,
        "
        1-6 module Geo.Shapes
        8-11 function Geo.Shapes.area
        13-15 function Geo.Shapes.helper
        17-19 macro Geo.Shapes.twice
        22-22 interface Geo.Size
        23-23 method Geo.Size.size
        26-26 impl impl Geo.Size for Geo.Point
        27-27 method impl Geo.Size for Geo.Point.size
        ",
    );
}

#[test]
fn haskell() {
    check(
        "src/Geo/Shapes.hs",
        r#"module Geo.Shapes (Shape (..), area) where

import Data.List (sort)

-- | A shape.
data Shape = Circle Double | Square Double
  deriving (Show)

newtype Name = Name String

type Shapes = [Shape]

-- | The area.
area :: Shape -> Double
area (Circle r) = pi * r * r
area (Square s) = s * s

class Sized a where
  size :: a -> Int

instance Sized Shape where
  size _ = 1

main :: IO ()
main = print (area (Circle 1))
"#,
        "
        1-3 window -
        5-7 type Shape
        9-9 type Name
        11-11 type Shapes
        13-16 function area
        18-18 trait Sized
        19-19 method Sized.size
        21-21 impl impl Sized for Shape
        22-22 method impl Sized for Shape.size
        24-25 function main
        ",
    );
}

#[test]
fn lua() {
    check(
        "lua/geo/shapes.lua",
        r#"local M = {}

-- The area of a circle.
function M.area(r)
  return math.pi * r * r
end

function M:describe()
  return "shapes"
end

local function helper(x)
  return x + 1
end

local twice = function(x)
  return x * 2
end

M.scale = function(x, k)
  return x * k
end

return M
"#,
        "
        1-1 window -
        3-6 function M.area
        8-10 function M:describe
        12-14 function helper
        16-18 function twice
        20-22 function M.scale
        24-24 window -
        ",
    );
}

#[test]
fn zig() {
    check(
        "src/point.zig",
        r#"const std = @import("std");

/// A point.
pub const Point = struct {
    x: i32,
    y: i32,

    /// The origin.
    pub fn origin() Point {
        return .{ .x = 0, .y = 0 };
    }
};

const Color = enum { red, green };

pub fn add(a: i32, b: i32) i32 {
    return a + b;
}

test "add works" {
    try std.testing.expect(add(1, 2) == 3);
}
"#,
        "
        1-1 window -
        3-6 struct Point
        8-11 method Point.origin
        14-14 enum Color
        16-18 function add
        20-22 function add works
        ",
    );
}

#[test]
fn bash() {
    let script = r#"#!/usr/bin/env bash
set -euo pipefail

# Says hello.
greet() {
  echo "hello $1"
}

function cleanup {
  rm -rf "$tmp"
}

greet world
"#;
    let expect = "
        1-2 window -
        4-7 function greet
        9-11 function cleanup
        13-13 window -
        ";
    for path in ["scripts/run.sh", "run.bash", "test/run.bats"] {
        check(path, script, expect);
    }
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

#[test]
fn zsh_stays_windows() {
    // The bash grammar would lose `newest` to the parameter flags above it.
    check(
        "functions.zsh",
        "join() {\n  print -r -- ${(j:,:)@}\n}\n\nnewest() {\n  print *(.om[1])\n}\n",
        "1-7 window -",
    );
    assert_eq!(detect("functions.zsh").name, "shell");
}

#[test]
fn chunk_sizes_follow_the_model_up_to_a_cap() {
    assert_eq!(ChunkOptions::for_model(256), ChunkOptions::default());
    assert_eq!(
        ChunkOptions::for_model(8192),
        ChunkOptions::for_max_tokens(512)
    );
    let small = ChunkOptions::for_model(128);
    assert!(small.max_chars < ChunkOptions::default().max_chars);
    // A long function is cut to what a 128-token model reads.
    let body: String = (0..80)
        .map(|i| format!("    let v{i} = compute_value({i});\n"))
        .collect();
    let text = format!("fn long() {{\n{body}}}\n");
    let chunks = Chunker::new().unwrap().chunk("a.rs", &text, &small);
    assert!(chunks.len() > 1);
    assert!(
        chunks.iter().all(|c| c.text.len() <= small.max_chars + 100),
        "{chunks:?}"
    );
}
