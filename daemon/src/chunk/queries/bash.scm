; Definitions codesearch indexes in Bash: functions.
(function_definition name: (word) @name) @function
