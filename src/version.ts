// ck's version: a plain semver, as containerd's is (clients such as nerdctl parse the Version
// service's answer as one); the revision says it is ck. A test holds it equal to package.json's.
export const CK_VERSION = "0.1.0";
export const CK_REVISION = `ck-${CK_VERSION}`;
