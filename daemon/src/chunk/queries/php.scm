; Definitions codesearch indexes in PHP. Only a braced namespace holds its members.
(namespace_definition name: (namespace_name) @name body: (compound_statement)) @module
(class_declaration name: (name) @name) @class
(interface_declaration name: (name) @name) @interface
(trait_declaration name: (name) @name) @trait
(enum_declaration name: (name) @name) @enum
(function_definition name: (name) @name) @function
(method_declaration name: (name) @name) @method
