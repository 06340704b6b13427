# Sourced by the build scripts of Kubernetes binaries (run in hack/controlplane): sets
# k8s_version and k8s_ldflags, the version stamps a release build writes (Kubernetes'
# hack/lib/version.sh): the servers and the kubelet read component-base's variables, kubectl's
# client version reads client-go's. The module zip carries no commit, so gitCommit keeps its
# placeholder; the build date is the release tag's time, so builds are reproducible.
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
k8s_date=$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
k8s_minor=${k8s_version#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$k8s_date"
done
