; Definitions codesearch indexes in C#. A block namespace qualifies what it holds.
(namespace_declaration name: (_) @name body: (declaration_list)) @module
(class_declaration name: (identifier) @name) @class
(record_declaration name: (identifier) @name) @class
(struct_declaration name: (identifier) @name) @struct
(interface_declaration name: (identifier) @name) @interface
(enum_declaration name: (identifier) @name) @enum
(delegate_declaration name: (identifier) @name) @type
(method_declaration name: (identifier) @name) @method
(constructor_declaration name: (identifier) @name) @method
(local_function_statement name: (identifier) @name) @function
; Properties with accessor bodies (not `{ get; set; }`) are methods of their type.
(property_declaration name: (identifier) @name accessors: (accessor_list (accessor_declaration body: (block)))) @method
