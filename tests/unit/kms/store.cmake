# State store, state commands and configuration (psc_kms_core). Included by
# tests/unit/kms/CMakeLists.txt.
add_library(kms_test_samples STATIC ${CMAKE_CURRENT_LIST_DIR}/test_cmd_samples.c)
target_link_libraries(kms_test_samples PUBLIC psc_kms_core)
target_include_directories(kms_test_samples PUBLIC ${CMAKE_CURRENT_LIST_DIR})

psc_add_test(test_kms_cmd SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cmd.c
  LIBS kms_test_samples psc_kms_core)
psc_add_test(test_kms_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_store.c
  LIBS kms_test_samples psc_kms_core)
psc_add_test(test_kms_config SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_config.c LIBS psc_kms_core)
