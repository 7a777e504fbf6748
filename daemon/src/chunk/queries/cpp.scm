; Definitions codesearch indexes in C++.
(function_definition declarator: (function_declarator declarator: (_) @name)) @function
(function_definition declarator: (pointer_declarator declarator: (function_declarator declarator: (_) @name))) @function
(function_definition declarator: (reference_declarator (function_declarator declarator: (_) @name))) @function
(class_specifier name: (_) @name body: (field_declaration_list)) @class
(struct_specifier name: (_) @name body: (field_declaration_list)) @struct
(union_specifier name: (_) @name body: (field_declaration_list)) @struct
(enum_specifier name: (_) @name body: (enumerator_list)) @enum
(namespace_definition name: (_) @name) @module
