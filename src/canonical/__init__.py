# A namespace package: other distributions may add canonical.* packages.
__path__ = __import__('pkgutil').extend_path(__path__, __name__)
