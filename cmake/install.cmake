# `cmake --install` rules; CPack's DEB generator (cmake/package.cmake) packages the same rules.
#
#   binary            ${prefix}/sbin/ringlb
#   configuration     ${sysconfdir}/ringlb/ringlb.toml, ${sysconfdir}/ringlb/examples/*
#   log rotation      ${sysconfdir}/logrotate.d/ringlb
#   systemd unit      ${prefix}/lib/systemd/system/ringlb.service (when etc/systemd has it)
#   man pages         ${mandir}/man8/ringlb.8, ${mandir}/man5/ringlb.toml.5
#
# Files under the configuration directory are never overwritten: an administrator's edits
# survive a second install. Which directory that is gets decided at install time, not at
# configure time, so that `cmake --install --prefix /usr` and CPack (which installs with prefix
# /usr) put it in /etc, as GNUInstallDirs does for the prefix /usr, and any other prefix P in
# P/etc.
include(GNUInstallDirs)

install(TARGETS ringlb RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})

install(FILES ${PROJECT_SOURCE_DIR}/man/ringlb.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${PROJECT_SOURCE_DIR}/man/ringlb.toml.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)

# The unit file is systemd's to look up in lib/systemd/system under /usr or /usr/local; not
# CMAKE_INSTALL_LIBDIR, which is lib/<multiarch> on Debian.
# A glob rather than if(EXISTS): the build directory reconfigures itself when the file appears.
file(GLOB RINGLB_SYSTEMD_UNIT CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/etc/systemd/ringlb.service)
if(RINGLB_SYSTEMD_UNIT)
  install(FILES ${RINGLB_SYSTEMD_UNIT} DESTINATION lib/systemd/system)
endif()

# install_config_file(SOURCE SUBDIR): SOURCE into ${sysconfdir}/SUBDIR unless a file of that
# name is there already (under DESTDIR, which file(INSTALL) adds to the absolute destination).
function(install_config_file source subdir)
  get_filename_component(name ${source} NAME)
  install(CODE "
    set(ringlb_sysconfdir \"${CMAKE_INSTALL_SYSCONFDIR}\")
    if(NOT IS_ABSOLUTE \"\${ringlb_sysconfdir}\")
      if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
        set(ringlb_sysconfdir \"/\${ringlb_sysconfdir}\")
      else()
        set(ringlb_sysconfdir \"\${CMAKE_INSTALL_PREFIX}/\${ringlb_sysconfdir}\")
      endif()
    endif()
    set(ringlb_destination \"\${ringlb_sysconfdir}/${subdir}\")
    if(EXISTS \"\$ENV{DESTDIR}\${ringlb_destination}/${name}\")
      message(STATUS \"Keeping: \$ENV{DESTDIR}\${ringlb_destination}/${name} (exists; the shipped one is ${source})\")
    else()
      file(INSTALL DESTINATION \"\${ringlb_destination}\" TYPE FILE FILES \"${source}\")
    endif()
  ")
endfunction()

install_config_file(${PROJECT_SOURCE_DIR}/etc/ringlb.toml ringlb)
file(GLOB RINGLB_EXAMPLE_CONFIGS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/etc/examples/*)
foreach(example IN LISTS RINGLB_EXAMPLE_CONFIGS)
  install_config_file(${example} ringlb/examples)
endforeach()
install_config_file(${PROJECT_SOURCE_DIR}/etc/logrotate.d/ringlb logrotate.d)
