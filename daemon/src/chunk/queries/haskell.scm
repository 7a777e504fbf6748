; Definitions codesearch indexes in Haskell. A signature and the equations after it
; merge into one definition (Grammar::clauses); an instance is an impl of its class.
(signature name: (variable) @name) @function
(function name: (variable) @name) @function
(bind name: (variable) @name) @function
(data_type name: (_) @name) @type
(newtype name: (_) @name) @type
(type_synonym name: (_) @name) @type
(type_family name: (_) @name) @type
(data_family name: (_) @name) @type
(class name: (_) @name) @trait
(instance name: (_) @trait_name patterns: (_) @name) @impl
