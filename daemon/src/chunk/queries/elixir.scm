; Definitions codesearch indexes in Elixir: calls of the def* macros. Consecutive
; clauses of one function merge into one definition (Grammar::clauses).
(call target: (identifier) @keyword (arguments . (alias) @name) (#eq? @keyword "defmodule")) @module
(call target: (identifier) @keyword (arguments . (alias) @name) (#eq? @keyword "defprotocol")) @interface
(call target: (identifier) @keyword (arguments . (alias) @trait_name (keywords (pair value: (alias) @name))) (#eq? @keyword "defimpl")) @impl
(call target: (identifier) @keyword (arguments . (alias) @name .) (#eq? @keyword "defimpl")) @impl
(call
  target: (identifier) @keyword
  (arguments .
    [(identifier) @name
     (call target: (identifier) @name)
     (binary_operator left: (call target: (identifier) @name) operator: "when")
     (binary_operator left: (identifier) @name operator: "when")])
  (#any-of? @keyword "def" "defp" "defdelegate" "defguard" "defguardp" "defn" "defnp")) @function
(call
  target: (identifier) @keyword
  (arguments .
    [(identifier) @name
     (call target: (identifier) @name)
     (binary_operator left: (call target: (identifier) @name) operator: "when")])
  (#any-of? @keyword "defmacro" "defmacrop")) @macro
