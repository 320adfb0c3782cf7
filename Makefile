# Shortcuts for the README's commands (run as root on Debian 12), and the build and
# install of a distribution (README "Install on a host"):
#
#   make PYTHON=/usr/bin/python3                  the wheel, the man pages, the bash completion
#   make install DESTDIR=D PREFIX=/usr PYTHON=/usr/bin/python3 \
#       PYTHON_SITEDIR=/usr/lib/python3/dist-packages [PYTHON_CHROOT=TREE]
#   make rpm                                      packaging/rpm.spec, built by rpmbuild
#
# make install lays out exactly what packaging/rpm.spec installs (its %install runs it;
# tests/test_rpm.py compares the two file lists). PYTHON (default: /usr/bin/python3, the
# system's, where it exists; else python3 on PATH) builds the wheel and the docs: it needs
# setuptools and wheel, and imports the package (so its dependencies too) to read the
# command-line parsers. PYTHON_SITEDIR defaults to the purelib for PREFIX of the
# python that runs the package (Debian's deb_system scheme where it exists, as the spec).
# PYTHON_CHROOT=TREE: that python is TREE's CHROOT_PYTHON, run under chroot: it
# byte-compiles the package (its .pyc must match its version) and names the scripts'
# shebang; DESTDIR must then lie inside TREE (usually DESTDIR=TREE).
.PHONY: all install rpm clean sample test setup lint

PREFIX ?= /usr
DESTDIR ?=
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)
PYTHON_CHROOT ?=
CHROOT_PYTHON ?= /usr/bin/python3
INSTALL ?= install

BINDIR = $(PREFIX)/bin
LIBEXECDIR = $(PREFIX)/libexec
DATADIR = $(PREFIX)/share
UNITDIR = $(PREFIX)/lib/systemd/system
PRESETDIR = $(PREFIX)/lib/systemd/system-preset
CATALOGDIR = $(PREFIX)/lib/systemd/catalog
DBUS_POLICYDIR = $(DATADIR)/dbus-1/system.d
DBUS_SERVICEDIR = $(DATADIR)/dbus-1/system-services
DBUS_INTERFACEDIR = $(DATADIR)/dbus-1/interfaces
POLKIT_ACTIONDIR = $(DATADIR)/polkit-1/actions
DOCDIR = $(DATADIR)/doc/ostreewatch
LICENSEDIR = $(DATADIR)/licenses/ostreewatch
MANDIR = $(DATADIR)/man
BASH_COMPLETIONDIR = $(DATADIR)/bash-completion/completions

# chroot needs root; anyone else gets a user namespace that maps them to root.
CHROOT = $(if $(filter 0,$(shell id -u)),chroot,unshare --user --map-root-user chroot)
ifeq ($(PYTHON_CHROOT),)
TARGET_PYTHON = $(PYTHON)
SHEBANG = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
else
TARGET_PYTHON = $(CHROOT) $(PYTHON_CHROOT) $(CHROOT_PYTHON)
SHEBANG = $(CHROOT_PYTHON)
endif
# Recursive: asked of the target's python only when install needs it.
PYTHON_SITEDIR ?= $(shell $(TARGET_PYTHON) -c 'import sysconfig as s; \
	n = "deb_system" if "deb_system" in s.get_scheme_names() else "posix_prefix"; \
	print(s.get_path("purelib", n, vars={"base": "$(PREFIX)"}))')

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' ostreewatch/__init__.py)
WHEEL = build/wheel/ostreewatch-$(VERSION)-py3-none-any.whl
PACKAGE_FILES := $(shell find ostreewatch -type f ! -path '*/__pycache__/*' ! -name '*.pyc')
WHEEL_INPUTS = $(PACKAGE_FILES) setup.cfg pyproject.toml README.md LICENSE
MAN_PAGES = build/man/ostreewatch.1.gz build/man/ostreewatchd.8.gz
COMPLETION = build/completion/ostreewatch
# Documentation installed in DOCDIR, as the spec's %doc lists it (a directory keeps its name).
DOC_FILES = README.md docs/hardening.md docs/fleet.md docs/logind.md docs/boot-outcome.md
DOC_TREES = contrib units/ostreewatch.service.d

all: $(WHEEL) $(MAN_PAGES) $(COMPLETION)

# Built from a copy of the package's files: a module deleted from the checkout cannot
# linger in setuptools' build/lib, and the checkout gets no egg-info.
$(WHEEL): $(WHEEL_INPUTS)
	@$(PYTHON) -c 'import setuptools, wheel' 2>/dev/null || { echo "make: $(PYTHON) has no setuptools or wheel:" \
		"install them (Debian: python3-setuptools python3-wheel) or name another PYTHON=" >&2; exit 1; }
	rm -rf build/src build/wheel
	mkdir -p build/src build/wheel
	cp -R ostreewatch setup.cfg pyproject.toml README.md LICENSE build/src/
	find build/src -name __pycache__ -prune -exec rm -rf {} +
	$(PYTHON) -c 'import os, setuptools.build_meta as b; os.chdir("build/src"); b.build_wheel("../wheel")' \
		>build/wheel.log 2>&1 || { cat build/wheel.log; exit 1; }
	test -f $@

# Man pages and completion from the argparse parsers themselves (scripts/gen-cli-docs.py).
build/man/%.gz: scripts/gen-cli-docs.py $(PACKAGE_FILES)
	mkdir -p build/man
	$(PYTHON) scripts/gen-cli-docs.py man $(basename $(basename $*)) >$(basename $@).tmp
	gzip -9n <$(basename $@).tmp >$@.tmp && mv $@.tmp $@ && rm $(basename $@).tmp

$(COMPLETION): scripts/gen-cli-docs.py $(PACKAGE_FILES)
	mkdir -p build/completion
	$(PYTHON) scripts/gen-cli-docs.py bash ostreewatch >$@.tmp && mv $@.tmp $@

install: all
	$(PYTHON) scripts/install-wheel.py --destdir '$(DESTDIR)' --sitedir '$(PYTHON_SITEDIR)' \
		--script ostreewatch=$(BINDIR) --script ostreewatchd=$(LIBEXECDIR) \
		--shebang '$(SHEBANG)' --compile-python '$(TARGET_PYTHON)' \
		$(if $(PYTHON_CHROOT),--compile-root '$(PYTHON_CHROOT)') $(WHEEL)
	mkdir -p build/subst
	sed -e 's|/usr/libexec/ostreewatchd|$(LIBEXECDIR)/ostreewatchd|' \
		-e 's|file:/usr/share/doc/ostreewatch/|file:$(DOCDIR)/|' units/ostreewatch.service >build/subst/ostreewatch.service
	touch -r units/ostreewatch.service build/subst/ostreewatch.service
	$(INSTALL) -Dpm 0644 build/subst/ostreewatch.service $(DESTDIR)$(UNITDIR)/ostreewatch.service
	$(INSTALL) -Dpm 0644 units/90-ostreewatch.preset $(DESTDIR)$(PRESETDIR)/90-ostreewatch.preset
	$(INSTALL) -Dpm 0644 units/ostreewatch.catalog $(DESTDIR)$(CATALOGDIR)/ostreewatch.catalog
	$(INSTALL) -Dpm 0644 dbus/org.ostreewatch1.conf $(DESTDIR)$(DBUS_POLICYDIR)/org.ostreewatch1.conf
	$(INSTALL) -Dpm 0644 dbus/org.ostreewatch1.service $(DESTDIR)$(DBUS_SERVICEDIR)/org.ostreewatch1.service
	$(INSTALL) -Dpm 0644 dbus/org.ostreewatch1.Manager.xml $(DESTDIR)$(DBUS_INTERFACEDIR)/org.ostreewatch1.Manager.xml
	$(INSTALL) -Dpm 0644 packaging/org.ostreewatch1.policy $(DESTDIR)$(POLKIT_ACTIONDIR)/org.ostreewatch1.policy
	$(INSTALL) -Dpm 0644 build/man/ostreewatch.1.gz $(DESTDIR)$(MANDIR)/man1/ostreewatch.1.gz
	$(INSTALL) -Dpm 0644 build/man/ostreewatchd.8.gz $(DESTDIR)$(MANDIR)/man8/ostreewatchd.8.gz
	$(INSTALL) -Dpm 0644 $(COMPLETION) $(DESTDIR)$(BASH_COMPLETIONDIR)/ostreewatch
	$(INSTALL) -Dpm 0644 LICENSE $(DESTDIR)$(LICENSEDIR)/LICENSE
	$(INSTALL) -d -m 0755 $(DESTDIR)$(DOCDIR)
	$(INSTALL) -pm 0644 $(DOC_FILES) $(DESTDIR)$(DOCDIR)/
	for tree in $(DOC_TREES); do \
		(cd $$(dirname $$tree) && find $$(basename $$tree) -type f) | while read -r f; do \
			$(INSTALL) -Dpm 0644 $$(dirname $$tree)/$$f $(DESTDIR)$(DOCDIR)/$$f || exit 1; \
		done || exit 1; \
	done

# packaging/rpm.spec built from the checkout's files (tracked or new, not ignored) into
# RPM_TOPDIR; rpmbuild's --nodeps: Debian's rpm database knows none of the BuildRequires.
RPM_TOPDIR ?= $(CURDIR)/build/rpm
rpm:
	rm -rf $(RPM_TOPDIR)
	mkdir -p $(RPM_TOPDIR)/SOURCES $(RPM_TOPDIR)/SPECS
	git ls-files -z --cached --others --exclude-standard \
		| xargs -0 sh -c 'for f; do [ -f "$$f" ] && printf "%s\0" "$$f"; done; :' sh \
		| tar -czf $(RPM_TOPDIR)/SOURCES/ostreewatch-$(VERSION).tar.gz --null -T - \
			--transform 's|^|ostreewatch-$(VERSION)/|'
	cp packaging/rpm.spec $(RPM_TOPDIR)/SPECS/ostreewatch.spec
	rpmbuild -ba --nodeps --define '_topdir $(RPM_TOPDIR)' $(RPM_TOPDIR)/SPECS/ostreewatch.spec

clean:
	rm -rf build

sample:
	scripts/run-sample.sh

test:
	scripts/run-tests.sh $(PYTEST_ARGS)

setup:
	scripts/setup-test-env.sh

lint:
	scripts/lint.sh
