; Definitions codesearch indexes in Rust. @item is the whole definition, @name its name.
(function_item name: (identifier) @name) @function
(function_signature_item name: (identifier) @name) @function
(struct_item name: (type_identifier) @name) @struct
(union_item name: (type_identifier) @name) @struct
(enum_item name: (type_identifier) @name) @enum
(trait_item name: (type_identifier) @name) @trait
(impl_item trait: (_) @trait_name type: (_) @name) @impl
(impl_item !trait type: (_) @name) @impl
(mod_item name: (identifier) @name body: (declaration_list)) @module
(macro_definition name: (identifier) @name) @macro
