# Warnings on for the project's own targets: hybridshard_set_warnings(target).
function(hybridshard_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wno-unused-parameter>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${HYBRIDSHARD_WERROR}>>:-Werror>)
endfunction()

if(HYBRIDSHARD_SANITIZE)
  list(JOIN HYBRIDSHARD_SANITIZE "," _hs_sanitizers)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${_hs_sanitizers}> $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=${_hs_sanitizers})
endif()
