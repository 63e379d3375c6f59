# The Debian package: `cpack -G DEB` in a build directory makes ringlb_<version>_amd64.deb from
# the rules of cmake/install.cmake, so the package and `cmake --install` cannot disagree about
# what goes where. The maintainer scripts are in packaging/deb/.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ringlb)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "ringlb maintainers <ringlb@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "TCP (layer 4) load-balancing forwarder built on io_uring")
set(CPACK_PACKAGE_DESCRIPTION
    "ringlb accepts TCP connections on configured addresses, picks a server for each by rules \
in a TOML file (listener, client address, balancing mode) and copies bytes both ways. It runs \
on io_uring, or on epoll where io_uring is unavailable, and is managed through signals, a \
management port and Prometheus metrics.")
# The configuration directory is chosen at install time from the prefix (/usr gives /etc): the
# install has to see the package's prefix, /usr, with the staging directory as DESTDIR.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # ringlb_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The libraries the binary links (liburing2, libc-ares2, libstdc++6, libc6, ...) come from
# dpkg-shlibdeps where it is installed (dpkg-dev), added to the list below; otherwise they are
# listed by hand. passwd: useradd, in postinst.
find_program(RINGLB_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(RINGLB_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "passwd, liburing2 (>= 2.3), libc-ares2 (>= 1.16.0), libtomlplusplus3 (>= 3.2.0), libstdc++6 (>= 12), libgcc-s1 (>= 3.0), libc6 (>= 2.34)")
endif()

# Every file under /etc is a conffile: dpkg keeps an administrator's edits on upgrade and asks
# before replacing them.
set(RINGLB_CONFFILES "/etc/ringlb/ringlb.toml\n/etc/logrotate.d/ringlb\n")
foreach(example IN LISTS RINGLB_EXAMPLE_CONFIGS)
  get_filename_component(name ${example} NAME)
  string(APPEND RINGLB_CONFFILES "/etc/ringlb/examples/${name}\n")
endforeach()
file(GENERATE OUTPUT ${PROJECT_BINARY_DIR}/deb/conffiles CONTENT "${RINGLB_CONFFILES}")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/deb/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/deb/postinst
    ${PROJECT_SOURCE_DIR}/packaging/deb/prerm
    ${PROJECT_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
