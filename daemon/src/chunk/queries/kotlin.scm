; Definitions codesearch indexes in Kotlin. An object (named companion included) holds
; methods like a class; an unnamed companion's members belong to the class around it.
(class_declaration (modifiers (class_modifier "enum")) name: (identifier) @name) @enum
(class_declaration "interface" name: (identifier) @name) @interface
(class_declaration "class" name: (identifier) @name) @class
(object_declaration name: (identifier) @name) @class
(companion_object name: (identifier) @name) @class
(function_declaration name: (_) @name) @function
(type_alias type: (identifier) @name) @type
