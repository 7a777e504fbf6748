; Definitions codesearch indexes in Zig: functions, containers bound to a name
; (`const Point = struct { ... };`) and tests.
(function_declaration name: (identifier) @name) @function
(variable_declaration (identifier) @name (struct_declaration)) @struct
(variable_declaration (identifier) @name (union_declaration)) @struct
(variable_declaration (identifier) @name (opaque_declaration)) @struct
(variable_declaration (identifier) @name (enum_declaration)) @enum
(variable_declaration (identifier) @name (error_set_declaration)) @enum
(test_declaration (string (string_content) @name)) @function
(test_declaration (identifier) @name) @function
