# psc_kms_core: the KMS daemon's state store, state commands and configuration
# loader (kms_store, kms_cmd, kms_config). Included by kms/CMakeLists.txt.
add_library(psc_kms_core STATIC
  ${CMAKE_CURRENT_LIST_DIR}/kms_cmd.c
  ${CMAKE_CURRENT_LIST_DIR}/kms_store.c
  ${CMAKE_CURRENT_LIST_DIR}/kms_config.c)
target_include_directories(psc_kms_core PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(psc_kms_core PUBLIC psc_proto PkgConfig::SQLITE PkgConfig::YAML
                      PkgConfig::OPENSSL)
