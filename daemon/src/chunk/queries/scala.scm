; Definitions codesearch indexes in Scala. An object holds methods like a class.
(package_clause name: (_) @name body: (template_body)) @module
(package_object name: (_) @name) @module
(class_definition name: (_) @name) @class
(object_definition name: (_) @name) @class
(trait_definition name: (_) @name) @trait
(enum_definition name: (_) @name) @enum
(function_definition name: (_) @name) @function
(function_declaration name: (_) @name) @function
(type_definition name: (_) @name) @type
