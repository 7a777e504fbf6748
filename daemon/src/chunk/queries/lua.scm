; Definitions codesearch indexes in Lua: `function M.f()`, `function M:f()`,
; `local function f()`, and functions assigned to a name.
(function_declaration name: (_) @name) @function
(variable_declaration (assignment_statement (variable_list . name: (_) @name) (expression_list . value: (function_definition)))) @function
(assignment_statement (variable_list . name: (_) @name) (expression_list . value: (function_definition))) @function
